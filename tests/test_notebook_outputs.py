"""What a displayed handle or group puts into the notebook: a few hundred bytes naming its tasks
(application/vnd.jupyter-taskq.tasks+json) that the Lab extension renders live, a group of any size
named by a server-side group id, and text/HTML fallbacks that say how many tasks they list."""

from __future__ import annotations

import json

import pytest

from jupyter_taskq.notebook import mime
from jupyter_taskq.notebook.client import TaskHandle, connect
from jupyter_taskq.notebook.display import HTML_LIST_LIMIT, group_bundle, task_bundle
from jupyter_taskq.notebook.group import TaskGroup

from conftest import TOKEN, wait_for


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


@pytest.fixture
def env(shared_server, monkeypatch):
    """This module's server, found as a kernel finds it (the environment): the default client an earlier
    test module left in this process (jupyter_taskq.connect caches one) would name a server now gone."""
    from jupyter_taskq.notebook import client as client_module

    monkeypatch.setenv("JUPYTER_TASKQ_URL", shared_server.url)
    monkeypatch.setenv("JUPYTER_TASKQ_TOKEN", TOKEN)
    monkeypatch.setattr(client_module, "_default_client", None)
    monkeypatch.setattr(client_module, "_default_found", None)
    return shared_server


def test_a_handle_names_its_task_and_the_api_path_only(env):
    handle = connect().submit(nap, (0,))
    data = task_bundle(handle)
    assert data[mime.MIME] == {"version": 1, "api": "taskq/api/", "task_ids": [handle.id]}
    assert TOKEN not in json.dumps(data)
    assert handle.id in data["text/plain"] and handle.id in data["text/html"]


def test_a_big_group_is_a_group_id_and_its_output_stays_small(env):
    client = env.client()
    handles = client.submit_many(nap, [(0,)] * 2000)
    group = TaskGroup(handles)
    data = group_bundle(group)
    ref = data[mime.MIME]
    assert set(ref) == {"version", "api", "group", "count"} and ref["count"] == 2000
    assert len(json.dumps(data)) < 2048, len(json.dumps(data))
    assert f"showing {HTML_LIST_LIMIT} of 2000 tasks" in data["text/html"]
    assert data["text/html"].count("<li>") == HTML_LIST_LIMIT
    assert group_bundle(group)[mime.MIME]["group"] == ref["group"]  # registered once per group object

    session = client.session
    answer = session.get(f"{env.url}taskq/api/groups/{ref['group']}?limit=5&ids=1").json()
    assert answer["count"] == 2000 and len(answer["tasks"]) == 5 and answer["task_ids"] == group.ids
    assert [t["id"] for t in answer["tasks"]] == group.ids[:5]
    assert sum(answer["counts"].values()) == 2000
    wait_for(lambda: session.get(f"{env.url}taskq/api/groups/{ref['group']}?limit=0").json()["done"], 120,
             message="the group's tasks finishing")
    done = session.get(f"{env.url}taskq/api/groups/{ref['group']}?limit=0").json()
    assert done["counts"] == {"COMPLETE": 2000} and done["tasks"] == [] and "task_ids" not in done


def test_a_small_group_lists_its_ids(env):
    handles = [connect().submit(nap, (0,)) for _ in range(3)]
    ref = group_bundle(TaskGroup(handles))[mime.MIME]
    assert ref["task_ids"] == [h.id for h in handles] and "group" not in ref


def test_group_errors_are_clear(env):
    session = env.client().session
    api = f"{env.url}taskq/api/groups"
    for body in ({}, {"task_ids": []}, {"task_ids": "abc"}, {"task_ids": [1, 2]}):
        answer = session.post(api, json=body)
        assert answer.status_code == 400 and "task_ids" in answer.json()["message"]
    assert session.get(f"{api}/{'0' * 32}").status_code == 404
    assert session.get(f"{api}/not-an-id").status_code == 404
    assert session.get(f"{api}/{'0' * 32}?limit=x").status_code == 400


def test_a_group_whose_tasks_were_deleted_is_gone(env):
    client = env.client()
    handles = [client.submit(nap, (0,)) for _ in range(12)]
    client.wait([h.id for h in handles], timeout=60)
    group_id = group_bundle(TaskGroup(handles))[mime.MIME]["group"]
    url = f"{env.url}taskq/api/groups/{group_id}"
    assert client.session.get(url).status_code == 200
    for handle in handles:
        client.delete(handle.id)
    answer = client.session.get(url)
    assert answer.status_code == 404 and "deleted" in answer.json()["message"]


def test_deleted_task_in_a_bundle_is_reported_by_the_api(env):
    """The output of a deleted task finds out from the API (404), which the Lab renderer shows as gone."""
    client = env.client()
    handle = TaskHandle(client.submit(nap, (0,)).id, client=client)
    handle.wait(60)
    client.delete(handle.id)
    assert client.session.get(f"{env.url}taskq/api/tasks/{handle.id}").status_code == 404


def test_a_task_records_the_notebook_and_cell_it_came_from(env):
    """In a kernel: JPY_SESSION_NAME is the notebook, the execute request's cellId the cell. From a script: neither."""
    import os

    from jupyter_client.manager import start_new_kernel

    kernel_env = dict(os.environ, JUPYTER_TASKQ_URL=env.url, JUPYTER_TASKQ_TOKEN=TOKEN,
                      JPY_SESSION_NAME="work/analysis.ipynb")
    manager, kc = start_new_kernel(kernel_name="python3", env=kernel_env, cwd=str(env.root))
    try:
        code = "from jupyter_taskq import task_queue\n@task_queue()\ndef one():\n    return 1\nh = one.put()\nprint(h.id)"
        msg = kc.session.msg("execute_request", {"code": code, "silent": False, "store_history": True,
                                                 "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
                             metadata={"cellId": "cell-42"})
        kc.shell_channel.send(msg)
        printed = ""
        while True:
            reply = kc.get_iopub_msg(timeout=60)
            if reply["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
                continue
            if reply["msg_type"] == "stream":
                printed += reply["content"]["text"]
            if reply["msg_type"] == "error":
                raise AssertionError(reply["content"]["traceback"])
            if reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle":
                break
    finally:
        kc.stop_channels()
        manager.shutdown_kernel(now=True)
    task = env.client().get(printed.strip())
    assert (task["notebook"], task["cell_id"]) == ("work/analysis.ipynb", "cell-42")
    scripted = env.client().get(connect().submit(nap, (0,)).id)
    assert (scripted["notebook"], scripted["cell_id"]) == (None, None)


def test_a_headless_run_saves_under_2_kb_per_display(env):
    """nbclient saves widget state by default: a displayed 2,000-task group, and a single handle, each add
    under 2 KB of widget state (one model naming the tasks, with a small loader; never the widget's code or
    its rows: issue 19, 24 KB for the group) beside outputs under 2 KB (what Lab saves)."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    setup = "from jupyter_taskq import task_queue\n@task_queue()\ndef f(x):\n    return x"
    displays = {"group": "g = f.map(range(2000))\ng", "handle": "h = f.put(1)\nh"}

    def run(cells: list[str]) -> str:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(env.root)}}).execute()
        return nbformat.writes(nb)

    def unrun(cells: list[str]) -> str:  # the same notebook saved unexecuted, with the metadata a run adds
        nb = nbformat.reads(run([setup]), as_version=4)
        nb.cells = [nb.cells[0]] + [nbformat.v4.new_code_cell(c, execution_count=i + 2) for i, c in enumerate(cells[1:])]
        return nbformat.writes(nb)

    for kind, code in displays.items():
        saved = run([setup, code])
        grew = len(saved) - len(unrun([setup, code]))
        nb = nbformat.reads(saved, as_version=4)
        states = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
        ours = [s["state"] for s in states.values() if s["state"].get("kind") in ("task", "group")]
        assert len(ours) == 1
        state = ours[0]
        assert "snapshot" not in state and "_css" not in state and len(state["_esm"]) < 800
        if kind == "group":
            assert state["total"] == 2000 and state["task_ids"] == [] and len(state["group_id"]) == 32
        widget_bytes = len(json.dumps(nb.metadata["widgets"]))
        outputs = len(json.dumps(nb.cells[1].outputs))
        print(f"\nheadless {kind}: the notebook grew {grew} B (outputs {outputs} B, widget state {widget_bytes} B)")
        assert widget_bytes + outputs < 2048, (kind, widget_bytes, outputs)  # what the display saves: 1.9 KB
        assert grew < 3072, (kind, grew)  # 24 KB before; nbformat's indentation makes the rest (2.5 KB)


def test_old_groups_whose_tasks_are_gone_are_swept(tmp_path):
    """The sweep a registration runs at most hourly: day-old groups of deleted tasks go, others stay."""
    import os
    import time

    from jupyter_taskq.server.groups import GroupIndex
    from jupyter_taskq.backends.sqlite_store import SqliteTaskStore

    store = SqliteTaskStore(str(tmp_path / "taskq.db"))
    now = time.time()
    store.create({"id": "alive", "name": "x", "status": "COMPLETE", "pool": "cpu", "created_at": now, "updated_at": now})
    index = GroupIndex(tmp_path / "groups")
    old_gone, old_alive, new_gone = index.create(["gone-1", "gone-2"]), index.create(["alive", "gone-3"]), index.create(["gone-4"])
    for group_id in (old_gone, old_alive):
        os.utime(index.root / f"{group_id}.json", (now - 2 * 86400, now - 2 * 86400))
    assert index.sweep(store) == 1
    assert index.ids(old_gone) is None and index.ids(old_alive) == ["alive", "gone-3"] and index.ids(new_gone) == ["gone-4"]
