"""The task widget in a real JupyterLab, driven by headless Chromium: it goes live through
PENDING -> RUNNING -> COMPLETE, its Cancel works while another cell keeps the kernel busy, its
Retry starts a new task, and its download link returns the task's output file."""

from __future__ import annotations

import pytest
from browser_kit import browser, cell, lab, open_notebook, page, run_cell, screenshot, wait_for, write_notebook  # noqa: F401
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

SETUP = """\
import time
from pathlib import Path
from jupyter_taskq import task_queue, Output

@task_queue()
def nap(seconds):
    time.sleep(seconds)
    return seconds

@task_queue()
def report(text):
    Path("report.txt").write_text(text)
    Output("report.txt").save()
    return len(text)
"""


def chip(page, index: int):
    return cell(page, index).locator(".jtq-widget .jtq-chip")


def tasks(lab) -> list[dict]:
    return lab.client().list(limit=100)["tasks"]


def kernel_busy(lab) -> bool:
    kernels = lab.client().session.get(lab.url + "api/kernels").json()
    return any(k["execution_state"] == "busy" for k in kernels)


def test_widget_goes_live_from_pending_to_complete(page, lab):
    name = write_notebook(lab.root, "live.ipynb", [
        SETUP,
        "blocker = nap.put(4)   # takes the only worker for a while",
        "h = nap.put(2)\nh",
    ])
    open_notebook(page, lab, name)
    for index in range(3):
        run_cell(page, index)
    expect(chip(page, 2)).to_have_text("PENDING", timeout=20_000)
    screenshot(page, "widget-pending")
    expect(chip(page, 2)).to_have_text("RUNNING", timeout=20_000)
    expect(cell(page, 2).locator(".jtq-facts").first).to_contain_text("attempt 1 of 4")
    screenshot(page, "widget-running")
    expect(chip(page, 2)).to_have_text("COMPLETE", timeout=20_000)
    expect(cell(page, 2).locator(".jtq-cancel")).to_be_hidden()
    expect(cell(page, 2).locator(".jtq-retry")).to_be_visible()
    screenshot(page, "widget-complete")


def test_cancel_while_the_kernel_is_busy_then_retry(page, lab):
    name = write_notebook(lab.root, "cancel.ipynb", [
        SETUP,
        "long = nap.put(120)\nlong",
        "time.sleep(60)   # keeps the kernel busy",
    ])
    open_notebook(page, lab, name)
    run_cell(page, 0)
    run_cell(page, 1)
    expect(chip(page, 1)).to_have_text("RUNNING", timeout=30_000)
    task_id = wait_for(lambda: next((t["id"] for t in tasks(lab) if t["status"] == "RUNNING"), None),
                       10, message="the running task in the API")
    run_cell(page, 2)
    wait_for(lambda: kernel_busy(lab), 10, message="the kernel busy in the sleeping cell")

    cell(page, 1).locator(".jtq-cancel").click()
    expect(chip(page, 1)).to_have_text("CANCELLED", timeout=10_000)
    assert lab.client().get(task_id)["status"] == "CANCELLED"
    assert kernel_busy(lab), "the cancel must not have waited for the busy kernel"
    screenshot(page, "widget-cancelled-while-kernel-busy")

    cell(page, 1).locator(".jtq-retry").click()
    expect(cell(page, 1).locator(".jtq-message")).to_contain_text("retried as", timeout=10_000)
    expect(chip(page, 1)).to_have_text("RUNNING", timeout=20_000)
    fresh = [t for t in tasks(lab) if t["id"] != task_id and t["status"] == "RUNNING"]
    assert fresh and fresh[0]["name"] == lab.client().get(task_id)["name"]
    screenshot(page, "widget-retried")
    lab.client().cancel([fresh[0]["id"]])
    expect(chip(page, 1)).to_have_text("CANCELLED", timeout=10_000)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:interrupt-kernel'); }")


def test_download_link_returns_the_output_file(page, lab):
    text = "jupyter-taskq output\n" * 1000
    name = write_notebook(lab.root, "download.ipynb", [SETUP, f"r = report.put({text!r})\nr"])
    open_notebook(page, lab, name)
    run_cell(page, 0)
    run_cell(page, 1)
    expect(chip(page, 1)).to_have_text("COMPLETE", timeout=30_000)
    link = cell(page, 1).locator("a.jtq-download")
    expect(link).to_have_text("⬇ report.txt")
    screenshot(page, "widget-download-link")
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename == "report.txt"
    with open(download.path(), encoding="utf-8") as f:
        assert f.read() == text


def test_the_notebook_widget_runs_the_bundle_built_from_the_lab_source(page, lab):
    """The ipywidget itself (what VS Code or Notebook without our extension draw), shown alone so Lab draws it
    rather than its output renderer: its loader imports taskq/static/taskq-widget.js from this server, and it
    follows its tasks over REST from the page, or relayed by the kernel where the page cannot reach the queue."""
    session = lab.client().session
    assert session.get(lab.url + "lab/extensions/jupyter-taskq-labextension/static/taskq-widget.js").ok, \
        "Lab serves another checkout's build"
    bundle = session.get(lab.url + "taskq/static/taskq-widget.js")
    assert bundle.ok and "javascript" in bundle.headers["Content-Type"]
    name = write_notebook(lab.root, "widget.ipynb", [
        SETUP,
        "from jupyter_taskq.notebook.client import connect\n"
        "from jupyter_taskq.notebook.widgets import GroupWidget, TaskWidget\n"
        "hs = [nap.put(0.5) for _ in range(3)]\n"
        "GroupWidget(connect(), task_ids=[h.id for h in hs])",
        "import os\nos.environ.pop('JUPYTER_TASKQ_SAME_ORIGIN')   # as in VS Code: the kernel relays\n"
        "w = TaskWidget(connect(), task_id=nap.put(0.5).id)\nw",
    ])
    open_notebook(page, lab, name)
    for index in range(3):
        run_cell(page, index)
    group = cell(page, 1).locator(".jtq-widget.jtq-group")
    expect(group.locator(".jtq-head")).to_contain_text("3 tasks", timeout=30_000)
    expect(group.locator(".jtq-head")).to_contain_text("3 COMPLETE", timeout=30_000)
    expect(group.locator(".jtq-row")).to_have_count(3)
    relayed = cell(page, 2).locator(".jtq-widget")
    expect(relayed.locator(".jtq-head .jtq-chip")).to_have_text("COMPLETE", timeout=30_000)
    expect(relayed.locator(".jtq-retry")).to_be_visible()
    screenshot(page, "widget-from-the-bundle")
