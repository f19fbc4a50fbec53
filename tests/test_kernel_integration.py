"""The notebook side in a real IPython kernel (jupyter_client) against a real server."""

from __future__ import annotations

import os
import textwrap

import pytest
from jupyter_client.manager import start_new_kernel

from conftest import TOKEN


@pytest.fixture(scope="module")
def kernel(shared_server):
    env = dict(os.environ, JUPYTER_TASKQ_URL=shared_server.url, JUPYTER_TASKQ_TOKEN=TOKEN)
    manager, client = start_new_kernel(kernel_name="python3", env=env, cwd=str(shared_server.root))
    yield client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def run(kernel, code: str, timeout: float = 60) -> dict:
    """Execute ``code``; return {'stdout', 'error', 'data'} from the cell's outputs."""
    msg_id = kernel.execute(textwrap.dedent(code))
    out = {"stdout": "", "error": None, "data": []}
    while True:
        msg = kernel.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out["stdout"] += content["text"]
        elif kind == "error":
            out["error"] = (content["ename"], content["evalue"], "\n".join(content["traceback"]))
        elif kind in ("execute_result", "display_data"):
            out["data"].append(content["data"])
        elif kind == "status" and content["execution_state"] == "idle":
            return out


def test_decorator_put_map_and_plain_call(kernel):
    out = run(kernel, """
        from jupyter_taskq import task_queue
        OFFSET = 100                                  # a notebook global
        @task_queue(max_retries=0)
        def shift(x, scale=1):
            return (x + OFFSET) * scale
        print(shift(1), shift.put(2).result(timeout=30), shift.map([1, 2, 3], scale=2).results(timeout=30))
    """)
    assert out["error"] is None, out["error"]
    assert out["stdout"].split("\n")[0] == "101 102 [202, 204, 206]"


def test_handle_displays_as_widget_with_text_fallback(kernel):
    out = run(kernel, """
        h = shift.put(5)
        h.wait(30)
        h
    """)
    assert out["error"] is None, out["error"]
    data = out["data"][-1]
    assert "application/vnd.jupyter.widget-view+json" in data
    assert "COMPLETE" in data["text/plain"] and "COMPLETE" in data["text/html"]


def test_remote_exception_is_reraised_with_remote_traceback(kernel):
    out = run(kernel, """
        class BadConfig(Exception):                   # a class defined in the notebook
            pass
        @task_queue(max_retries=0)
        def check(cfg):
            raise BadConfig(f"learning rate {cfg['lr']} too high")
        check.put({"lr": 10}).result(timeout=30)
    """)
    ename, evalue, tb = out["error"]
    assert ename == "BadConfig" and evalue == "learning rate 10 too high"
    assert "RemoteTraceback" in tb and "in check" in tb


def test_unserialisable_argument_is_named_before_sending(kernel):
    out = run(kernel, """
        import sqlite3
        before = len(__import__("jupyter_taskq").tasks(limit=1000))
        conn = sqlite3.connect(":memory:")
        shift.put(conn)
    """)
    ename, evalue, _ = out["error"]
    assert ename == "PayloadError" and "argument 0 of the call (a sqlite3.Connection)" in evalue
    out = run(kernel, "print(len(__import__('jupyter_taskq').tasks(limit=1000)) - before)")
    assert out["stdout"].strip() == "0"


def test_cell_magic_captures_free_names_and_pulls_results_back(kernel):
    out = run(kernel, """
        %load_ext jupyter_taskq
        cfg = {"width": 3}
        def build(cfg):
            return [1] * cfg["width"]
    """)
    assert out["error"] is None, out["error"]
    out = run(kernel, """
        %%task_queue --retries 0 --timeout 60 --name exp1
        model = build(cfg)
        acc = sum(model) / 4
    """)
    assert out["error"] is None, out["error"]
    out = run(kernel, """
        print(exp1.result(timeout=30))
        %task_pull exp1
        print(model, acc)
    """)
    assert out["error"] is None, out["error"]
    assert out["stdout"].split("\n")[:2] == ["{'model': [1, 1, 1], 'acc': 0.75}", "[1, 1, 1] 0.75"]


def test_cell_magic_names_an_unserialisable_variable(kernel):
    out = run(kernel, """
        import sqlite3
        db = sqlite3.connect(":memory:")
    """)
    out = run(kernel, """
        %%task_queue
        rows = db.execute("select 1").fetchall()
    """)
    ename, evalue, _ = out["error"]
    assert ename == "PayloadError" and "notebook variable 'db'" in evalue


def test_cancel_and_retry_from_the_handle(kernel, tmp_path):
    gate = tmp_path / "gate"
    out = run(kernel, f"""
        import os, time
        from jupyter_taskq import TaskHandle
        @task_queue(max_retries=0)
        def hold(path):
            while not os.path.exists(path):
                time.sleep(0.01)
            return "released"
        h = hold.put({str(gate)!r})
        while h.status() != "RUNNING":
            time.sleep(0.05)
        print(h.cancel())
        print(h.wait(10))
        fresh = TaskHandle(h.id)                      # a handle from a bare id, as in a new kernel
        print(fresh.status())
        again = fresh.retry()
        open({str(gate)!r}, "w").close()
        print(again.result(timeout=30))
    """)
    assert out["error"] is None, out["error"]
    assert out["stdout"].split("\n")[:4] == ["True", "CANCELLED", "CANCELLED", "released"]
