"""Task outputs that live in the front end (issue 14), in a real JupyterLab driven by headless
Chromium: an output stays live across a page reload with its kernel gone, a notebook run without
a browser opens later showing how its tasks ended (and saves that state into its fallbacks), and a
displayed 2,000-task group adds under 2 KB to the saved notebook."""

from __future__ import annotations

import json
import re
import os

import pytest
from browser_kit import (browser, cell, make_lab, open_notebook, page, run_cell, screenshot,  # noqa: F401
                         wait_for, write_notebook)
from playwright.sync_api import expect

from conftest import TOKEN

pytestmark = pytest.mark.browser

MIME = "application/vnd.jupyter-taskq.tasks+json"

SETUP = """\
import time
from jupyter_taskq import task_queue

@task_queue()
def nap(seconds):
    time.sleep(seconds)
    return seconds
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab with the extension and two CPU workers (a 2,000-task group finishes in seconds)."""
    server = make_lab(tmp_path_factory.mktemp("lab-outputs"), cpu_workers=2).start()
    yield server
    server.stop()


def flaky(marker):
    """Fails its first attempt (no marker yet), succeeds on the next."""
    import os

    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError("first try fails")
    return "ok"


def output(page, index: int):
    return cell(page, index).locator(".jtqo-output")


def chip(page, index: int):
    return output(page, index).locator(".jtq-head .jtq-chip")


def save(page) -> None:
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")


def saved_outputs(lab, name: str, index: int) -> list[dict]:
    """The cell's outputs as saved, each multi-line string joined (nbformat may store a list of lines)."""
    outputs = json.loads((lab.root / name).read_text())["cells"][index]["outputs"]
    for out in outputs:
        data = out.get("data", {})
        for key, value in data.items():
            if isinstance(value, list):
                data[key] = "".join(value)
    return outputs


def shut_down_kernels(lab) -> None:
    session = lab.client().session
    for kernel in session.get(lab.url + "api/kernels").json():
        session.delete(f"{lab.url}api/kernels/{kernel['id']}").raise_for_status()
    wait_for(lambda: session.get(lab.url + "api/kernels").json() == [], 20, message="no kernel left")


def test_output_stays_live_after_a_reload_with_the_kernel_shut_down(page, lab):
    name = write_notebook(lab.root, "reload.ipynb", [SETUP, "h = nap.put(120)\nh"])
    open_notebook(page, lab, name)
    run_cell(page, 0)
    run_cell(page, 1)
    expect(chip(page, 1)).to_have_text("RUNNING", timeout=30_000)
    expect(output(page, 1).locator(".jtq-facts").first).to_contain_text("attempt 1 of 4")
    expect(cell(page, 1).locator(".jupyter-widgets")).to_have_count(0)  # our renderer wins over the widget
    save(page)
    wait_for(lambda: MIME in json.dumps(saved_outputs(lab, name, 1)), 10, message="the output saved")
    task_id = saved_outputs(lab, name, 1)[0]["data"][MIME]["task_ids"][0]
    shut_down_kernels(lab)

    page.reload()
    expect(chip(page, 1)).to_have_text("RUNNING", timeout=30_000)
    screenshot(page, "output-running-after-reload")
    shut_down_kernels(lab)  # whatever Lab started on reload: the output must not need a kernel
    lab.client().cancel([task_id])  # from elsewhere: the output hears it through the change feed
    expect(chip(page, 1)).to_have_text("CANCELLED", timeout=30_000)

    output(page, 1).locator(".jtq-retry").click()
    expect(output(page, 1).locator(".jtq-message")).to_contain_text("retried as", timeout=30_000)
    expect(chip(page, 1)).to_have_text("RUNNING", timeout=20_000)
    output(page, 1).locator(".jtq-cancel").click()  # no kernel: the output calls the REST API itself
    expect(chip(page, 1)).to_have_text("CANCELLED", timeout=30_000)
    screenshot(page, "output-cancelled-without-kernel")
    save(page)
    retried = lambda: saved_outputs(lab, name, 1)[0]["data"][MIME]["task_ids"][0]  # noqa: E731
    wait_for(lambda: retried() != task_id, 10, message="the output naming the retried task once saved")
    assert lab.client().get(retried())["retry_of"] == task_id


def test_a_notebook_run_without_a_browser_opens_with_its_final_state(page, lab, tmp_path):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    name = write_notebook(lab.root, "headless.ipynb", [
        SETUP,
        "blocker = nap.put(3)\nblocker",
        "g = nap.map([0.2] * 3)\ng",
        "doomed = nap.put('not a number')\ndoomed",
    ])
    nb = nbformat.read(lab.root / name, as_version=4)
    env = {"JUPYTER_TASKQ_URL": lab.url, "JUPYTER_TASKQ_TOKEN": TOKEN}
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nbclient.NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(lab.root)}}).execute()
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    nbformat.write(nb, lab.root / name)
    frozen = saved_outputs(lab, name, 2)[0]["data"]["text/plain"]
    assert "PENDING" in frozen, frozen  # the snapshot taken while the blocker ran

    client = lab.client()
    final = ("COMPLETE", "FAILED", "CANCELLED", "TIMEOUT", "EXPIRED")
    wait_for(lambda: all(t["status"] in final for t in client.list(limit=20)["tasks"]), 60,
             message="the headless run's tasks finishing")
    open_notebook(page, lab, name)
    expect(chip(page, 1)).to_have_text("COMPLETE")
    expect(output(page, 2).locator(".jtq-head")).to_contain_text("3 COMPLETE")
    expect(chip(page, 3)).to_have_text("FAILED")
    expect(output(page, 3).locator(".jtq-error summary")).to_contain_text("TypeError")
    screenshot(page, "output-headless-reopened")
    save(page)
    wait_for(lambda: saved_outputs(lab, name, 2)[0]["data"]["text/plain"] == "3 tasks: 3 COMPLETE", 10,
             message="the group's text fallback rewritten with its final state")
    saved = saved_outputs(lab, name, 3)[0]["data"]
    assert "FAILED" in saved["text/plain"] and "TypeError" in saved["text/html"]

    doomed = saved[MIME]["task_ids"][0]
    client.delete(doomed)  # from elsewhere: the output hears of it and says so
    expect(output(page, 3).locator(".jtq-gone")).to_have_text(f"Task {doomed} no longer exists on this server.")


def test_a_2000_task_group_adds_under_2_kb_to_the_saved_notebook(page, lab):
    name = write_notebook(lab.root, "big.ipynb", [SETUP, "g = nap.map([0] * 2000)\ng"])
    open_notebook(page, lab, name)
    save(page)  # Lab's own formatting, so the sizes compare
    wait_for(lambda: '\n "cells"' in (lab.root / name).read_text(), 10, message="Lab's save")
    before = (lab.root / name).stat().st_size
    run_cell(page, 0)
    run_cell(page, 1)
    head = output(page, 1).locator(".jtq-head")
    expect(head).to_contain_text("2000 tasks", timeout=60_000)
    expect(output(page, 1).locator(".jtq-shown")).to_have_text("showing 50 of 2000 tasks")
    expect(head).to_contain_text("2000 COMPLETE", timeout=120_000)
    screenshot(page, "output-group-2000")
    save(page)
    wait_for(lambda: "2000 COMPLETE" in json.dumps(saved_outputs(lab, name, 1)), 10, message="the final state saved")
    grown = (lab.root / name).stat().st_size - before
    print(f"\nsaved notebook grew by {grown} bytes for one displayed 2,000-task group (and one setup cell's count)")
    assert grown < 2048, grown
    data = saved_outputs(lab, name, 1)[0]["data"]
    assert set(data[MIME]) == {"version", "api", "group", "count"}
    assert "showing 10 of 2000 tasks" in "".join(data["text/html"])


def test_go_to_cell_opens_the_notebook_at_the_cell_a_task_came_from(page, lab):
    from browser_kit import open_lab

    filler = [f"x{i} = {i}" for i in range(30)]
    name = write_notebook(lab.root, "cells.ipynb", [SETUP, *filler, "h = nap.put(0)\nh"])
    target = len(filler) + 1
    open_notebook(page, lab, name)
    run_cell(page, 0)
    run_cell(page, target)
    expect(chip(page, target)).to_have_text("COMPLETE", timeout=30_000)
    task_id = output(page, target).get_attribute("data-task-id") or lab.client().list(limit=1)["tasks"][0]["id"]
    task = lab.client().get(task_id)
    assert (task["notebook"], task["cell_id"]) == (str(lab.root / name), f"c{target}")
    save(page)

    open_lab(page, lab)  # a fresh workspace: the notebook is not open
    page.locator('.jp-SideBar .lm-TabBar-tab[data-id="jupyter-taskq-panel"]').click()
    row = page.locator(f'#jupyter-taskq-panel .jtqp-row[data-task-id="{task_id}"]')
    row.click()  # the detail view says where the task came from
    detail = page.locator("#jupyter-taskq-panel .jtqp-detail")
    expect(detail.locator(".jtqp-notebook")).to_have_text(name)
    detail.locator(".jtqp-go-to-cell").click()
    page.wait_for_function(
        """([name, index]) => {
            const w = window.jupyterapp.shell.currentWidget;
            return Boolean(w && w.context && w.context.path === name && w.content.activeCellIndex === index);
        }""", arg=[name, target], timeout=30_000)
    expect(cell(page, target)).to_be_in_viewport()
    expect(cell(page, target)).to_have_class(re.compile(r"\bjp-mod-active\b"))
    screenshot(page, "go-to-cell")


def test_without_our_renderer_the_widget_still_shows_the_task(page, lab):
    """A front end with ipywidgets but not our extension (VS Code, say) draws the widget from the same bundle:
    emulated here by taking our renderer out of the notebook's registry before the cell runs."""
    name = write_notebook(lab.root, "widget.ipynb", [SETUP, "h = nap.put(1)\nh", "g = nap.map([0.1] * 30)\ng"])
    open_notebook(page, lab, name)
    page.evaluate(f"() => window.jupyterapp.shell.currentWidget.content.rendermime.removeMimeType('{MIME}')")
    run_cell(page, 0)
    run_cell(page, 1)
    widget_chip = cell(page, 1).locator(".jtq-widget .jtq-chip")
    expect(widget_chip).to_have_text("COMPLETE", timeout=30_000)
    expect(output(page, 1)).to_have_count(0)
    run_cell(page, 2)  # a group the widget reads as groups/<id> (its state carries no ids, 20 rows)
    group = cell(page, 2).locator(".jtq-widget.jtq-group")
    expect(group.locator(".jtq-head")).to_contain_text("30 COMPLETE", timeout=60_000)
    expect(group.locator(".jtq-list")).to_contain_text("showing 20 of 30 tasks")
    expect(group.locator(".jtq-row")).to_have_count(20)
    screenshot(page, "widget-fallback")


def open_retried_task_detail(page, lab, fn, marker) -> None:
    """Runs ``fn(marker)`` (which fails once, then succeeds) and opens its detail view in the panel."""
    from browser_kit import open_lab

    from jupyter_taskq.notebook.client import TaskHandle

    client = lab.client()
    handle = TaskHandle(client.submit(fn, (str(marker),), max_retries=2).id, client=client)
    assert handle.result(timeout=60) == "ok"
    open_lab(page, lab)
    page.locator('.jp-SideBar .lm-TabBar-tab[data-id="jupyter-taskq-panel"]').click()
    page.locator(f'#jupyter-taskq-panel .jtqp-row[data-task-id="{handle.id}"]').click()


def test_the_detail_view_lists_every_attempt(page, lab, tmp_path):
    open_retried_task_detail(page, lab, flaky, tmp_path / "marker")
    attempts = page.locator("#jupyter-taskq-panel .jtqp-attempt")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0).locator(".jtqp-attempt-reason")).to_have_text("error")
    expect(attempts.nth(0).locator(".jtqp-attempt-error")).to_contain_text("ValueError: first try fails")
    expect(attempts.nth(1).locator(".jtqp-attempt-reason")).to_have_text("complete")
    screenshot(page, "detail-attempts")


def test_a_failure_elsewhere_is_notified_and_leads_back_to_its_cell(page, lab):
    name = write_notebook(lab.root, "notify.ipynb", [
        SETUP + "\n@task_queue(max_retries=0)\ndef boom(seconds):\n    time.sleep(seconds)\n    raise ValueError('it broke')\n",
        "b = boom.put(3)",
    ])
    open_notebook(page, lab, name)
    run_cell(page, 0)
    run_cell(page, 1)
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.content.widgets[1].model.executionCount")
    page.evaluate("() => { window.jupyterapp.commands.execute('launcher:create'); }")  # the user looks elsewhere
    toast = page.locator(".Toastify__toast", has_text="Task boom FAILED in notify.ipynb")
    expect(toast).to_contain_text("ValueError: it broke", timeout=30_000)
    screenshot(page, "notification-failure")
    toast.get_by_role("button", name="Go to cell").click()
    page.wait_for_function(
        """(name) => {
            const w = window.jupyterapp.shell.currentWidget;
            return Boolean(w && w.context && w.context.path === name && w.content.activeCellIndex === 1);
        }""", arg=name, timeout=20_000)


def test_the_output_shows_progress_and_follows_the_log(page, lab):
    chatty = ("from jupyter_taskq import progress\n@task_queue()\ndef chatty(n):\n    for i in range(n):\n"
              "        print(f'chatty line {i}', flush=True)\n        progress(i + 1, n, f'step {i}')\n"
              "        time.sleep(0.5)\n    return n\n")
    name = write_notebook(lab.root, "chatty.ipynb", [SETUP + chatty, "c = chatty.put(12)\nc"])
    open_notebook(page, lab, name)
    run_cell(page, 0)
    run_cell(page, 1)
    expect(chip(page, 1)).to_have_text("RUNNING", timeout=30_000)
    expect(output(page, 1).locator(".jtq-progress-row")).to_contain_text("/ 12 · step", timeout=20_000)
    output(page, 1).locator(".jtq-log summary").click()
    log = output(page, 1).locator(".jtq-log-text")
    expect(log).to_contain_text("chatty line 1", timeout=20_000)
    expect(log).to_contain_text("chatty line 11", timeout=30_000)  # followed while it runs
    expect(chip(page, 1)).to_have_text("COMPLETE", timeout=30_000)
    screenshot(page, "output-log-followed")


def test_a_completed_result_shows_its_display_without_a_kernel_and_sanitised(page, lab):
    """A DataFrame result shows as a table (the worker's IPython formatter made its HTML); HTML from a task
    is untrusted: its script never runs in the page."""
    evil = ("class Evil:\n    def _repr_html_(self):\n"
            "        return '<b class=\"evil\">bold</b><script>window.jtqPwned = 1</script>'"
            "'<img src=\"x\" onerror=\"window.jtqPwned = 2\">'\n"
            "@task_queue()\ndef make_evil():\n    return Evil()\n"
            "@task_queue()\ndef frame(n):\n    import pandas as pd\n"
            "    return pd.DataFrame({'x': range(n), 'y': [f'row {i}' for i in range(n)]})\n")
    name = write_notebook(lab.root, "display.ipynb", [SETUP + evil, "f = frame.put(3)\nf", "e = make_evil.put()\ne"])
    open_notebook(page, lab, name)
    run_cell(page, 0)
    run_cell(page, 1)
    run_cell(page, 2)
    expect(chip(page, 1)).to_have_text("COMPLETE", timeout=60_000)
    table = output(page, 1).locator(".jtq-result table")
    expect(table).to_be_visible(timeout=20_000)
    expect(table.locator("tbody tr")).to_have_count(3)
    expect(table).to_contain_text("row 2")
    screenshot(page, "output-dataframe-result")
    expect(chip(page, 2)).to_have_text("COMPLETE", timeout=60_000)
    expect(output(page, 2).locator(".jtq-result b.evil")).to_have_text("bold", timeout=20_000)
    expect(output(page, 2).locator(".jtq-result script")).to_have_count(0)
    assert page.evaluate("() => window.jtqPwned") is None


def loud_flaky(marker):
    """Prints which try it is, fails the first, succeeds on the next: each attempt's log says its own."""
    import os

    if not os.path.exists(marker):
        open(marker, "w").close()
        print("first try printing", flush=True)
        raise ValueError("first try fails")
    print("second try printing", flush=True)
    return "ok"


def test_each_attempt_opens_its_own_log_in_the_detail_view(page, lab, tmp_path):
    open_retried_task_detail(page, lab, loud_flaky, tmp_path / "marker")
    detail = page.locator("#jupyter-taskq-panel .jtqp-detail")
    log = detail.locator(".jtqp-log")
    expect(log).to_contain_text("second try printing", timeout=20_000)  # the latest attempt's, by default
    expect(log).not_to_contain_text("first try printing")
    detail.locator('.jtqp-attempt[data-attempt="1"] .jtqp-attempt-log').click()
    expect(log).to_contain_text("first try printing", timeout=20_000)
    expect(log).not_to_contain_text("second try printing")
    expect(detail.locator(".jtqp-log-title")).to_contain_text("Log of attempt 1")
    screenshot(page, "detail-attempt-log")
    detail.locator(".jtqp-log-latest").click()
    expect(log).to_contain_text("second try printing", timeout=20_000)


def test_a_group_row_opens_its_tasks_result_display(page, lab):
    """A displayed map() shows each COMPLETE task's result on asking (a row opened), as a single task's
    output does: the results of rows nobody opens are never read."""
    shapes = ("@task_queue()\ndef frame(n):\n    import pandas as pd\n"
              "    return pd.DataFrame({'x': range(n), 'y': [f'row {i} of {n}' for i in range(n)]})\n")
    name = write_notebook(lab.root, "group-results.ipynb", [SETUP + shapes, "g = frame.map([1, 2, 3])\ng"])
    open_notebook(page, lab, name)
    run_cell(page, 0)
    run_cell(page, 1)
    group = output(page, 1)
    expect(group.locator(".jtq-head")).to_contain_text("3 COMPLETE", timeout=60_000)
    expect(group.locator(".jtq-result")).to_have_count(0)  # nothing read up front
    displays = []
    page.on("request", lambda r: displays.append(r.url) if r.url.split("?")[0].endswith("/display") else None)
    rows = group.locator(".jtq-row")
    expect(rows).to_have_count(3)
    second = rows.nth(1)
    second.locator(".jtq-row-result").click()
    task_id = second.get_attribute("data-task-id")
    shown = group.locator(f'.jtq-row-detail[data-task-id="{task_id}"] .jtq-result table')
    expect(shown).to_be_visible(timeout=20_000)
    n = len(shown.locator("tbody tr").all())
    expect(shown).to_contain_text(f"row {n - 1} of {n}")  # this row's own result
    expect(second.locator(".jtq-row-result")).to_have_attribute("aria-expanded", "true")
    screenshot(page, "output-group-row-result")
    second.locator(".jtq-row-result").click()
    expect(group.locator(".jtq-row-detail")).to_have_count(0)
    assert [u for u in displays if task_id in u] and all(task_id in u for u in displays), displays


def test_cell_marks_count_a_notebooks_tasks_under_600_newer_ones_from_elsewhere(page, lab):
    """Issue 14's marks come from every task of the open notebook: a cell whose tasks are older than the
    queue's newest 500 (here 600 newer tasks of another notebook) keeps its mark."""
    import time
    import uuid

    from jupyter_taskq.backends.sqlite_store import SqliteTaskStore

    name = write_notebook(lab.root, "old-marks.ipynb", ["x = 1", "h = nap.put(0)", "y = 2"])
    now = time.time()

    def done(notebook: str, cell_id: str, status: str = "COMPLETE") -> dict:
        return {"id": str(uuid.uuid4()), "name": "seeded", "status": status, "pool": "cpu", "gpu": 0,
                "created_at": now, "started_at": now, "ended_at": now, "updated_at": now, "attempt": 1,
                "worker": "cpu0", "max_retries": 0, "retry_delay": 0, "retry_backoff": 1, "priority": 0,
                "result_ttl": 3600, "notebook": notebook, "cell_id": cell_id}

    ours = [done(str(lab.root / name), "c1"), done(str(lab.root / name), "c1", "FAILED")]
    store = SqliteTaskStore(str(lab.state_dir / "taskq.db"))  # tasks that ran earlier, as the queue keeps them
    store.create_many(ours)
    store.create_many([done("/elsewhere/other.ipynb", "c1") for _ in range(600)])
    store.close()
    newest = {t["id"] for t in lab.client().list(limit=500)["tasks"]}
    assert not newest & {t["id"] for t in ours}  # the old window of 500 would have shown no mark
    try:
        open_notebook(page, lab, name)
        expect(cell(page, 1)).to_have_attribute("data-taskq-tasks", "2", timeout=30_000)
        expect(cell(page, 1)).to_have_attribute("data-taskq-state", "failed")
        expect(cell(page, 1)).to_have_attribute("title", "2 tasks from this cell, 1 failed")
        expect(cell(page, 0)).not_to_have_class(re.compile(r"\bjtq-cell-has-tasks\b"))
        screenshot(page, "cell-marks-old-tasks")
    finally:
        store = SqliteTaskStore(str(lab.state_dir / "taskq.db"))
        for task in store.list(text="seeded", limit=1000):
            store.delete(task["id"])
        store.close()
