"""Nothing a task starts outlives it: 50 children, some in new sessions (setsid) and some daemonised,
end when the task completes, fails, is cancelled or times out, and when its worker or the server dies.

Each attempt runs under a keeper process that is a Linux child subreaper (see
jupyter_taskq/worker/task_process.py), so even a process that left the task's session is
re-parented to it and killed when the attempt ends.
"""

from __future__ import annotations

import os
import random
import signal

import psutil
import pytest

from conftest import wait_for

pytestmark = pytest.mark.slow

CHILDREN = 50


def start_children(token, started, gate, fail=False):
    """Start 50 sleepers: plain children, children in a new session, and daemonised ones (their
    parent shell exits at once, leaving them to whoever reaps orphans); then wait for the gate."""
    import os
    import subprocess
    import time

    for i in range(50):
        kind = i % 3
        if kind == 0:
            subprocess.Popen(["sleep", token])
        elif kind == 1:
            subprocess.Popen(["sleep", token], start_new_session=True)
        else:
            subprocess.Popen(["sh", "-c", f"setsid sleep {token} >/dev/null 2>&1 &"]).wait()
    open(started, "w").close()
    while not os.path.exists(gate):
        time.sleep(0.01)
    if fail:
        raise RuntimeError("failing with 50 children running")
    return "returned with 50 children running"


def sleepers(token) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["cmdline"] == ["sleep", token] and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def submit_with_children(client, tmp_path, **options):
    token = f"{4000 + random.random() * 1000:.6f}"  # a unique `sleep` argument marks this test's processes
    started, gate = tmp_path / "started", tmp_path / "gate"
    handle = client.submit(start_children, (token, str(started), str(gate), options.pop("fail", False)), **options)
    wait_for(lambda: started.exists(), 60, message="the task started its children")
    wait_for(lambda: len(sleepers(token)) == CHILDREN, 30, message=f"{CHILDREN} children running")
    return handle, token, gate


def assert_all_end(token, seconds=15):
    wait_for(lambda: not sleepers(token), seconds, 0.1,
             message=f"all {CHILDREN} children gone (left: {len(sleepers(token))})")


def status(client, task_id):
    return client.get(task_id)["status"]


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    from conftest import TaskqServer

    server = TaskqServer(tmp_path_factory.mktemp("orphans"), gpus=[], cpu_workers=1).start()
    yield server
    server.close()


def test_children_end_when_the_task_completes(one_worker, tmp_path):
    client = one_worker.client()
    handle, token, gate = submit_with_children(client, tmp_path)
    gate.touch()
    assert handle.result(timeout=30) == "returned with 50 children running"
    assert_all_end(token)


def test_children_end_when_the_task_fails(one_worker, tmp_path):
    client = one_worker.client()
    handle, token, gate = submit_with_children(client, tmp_path, fail=True, max_retries=0)
    gate.touch()
    wait_for(lambda: status(client, handle.id) == "FAILED", 30, message="FAILED")
    assert_all_end(token)


def test_children_end_when_the_task_is_cancelled(one_worker, tmp_path):
    client = one_worker.client()
    handle, token, _ = submit_with_children(client, tmp_path)
    assert handle.cancel()
    wait_for(lambda: status(client, handle.id) == "CANCELLED", 10, message="CANCELLED")
    assert_all_end(token)


def test_children_end_when_the_task_times_out(one_worker, tmp_path):
    client = one_worker.client()
    handle, token, _ = submit_with_children(client, tmp_path, timeout=20)
    wait_for(lambda: status(client, handle.id) == "TIMEOUT", 40, message="TIMEOUT")
    assert_all_end(token)


def test_children_end_when_the_worker_is_killed(make_server, tmp_path):
    server = make_server(gpus=[], cpu_workers=1)
    client = server.client()
    handle, token, _ = submit_with_children(client, tmp_path, max_retries=0)
    os.kill(server.worker_pids()["cpu0"], signal.SIGKILL)
    assert_all_end(token)
    wait_for(lambda: status(client, handle.id) == "FAILED", 30, message="FAILED: worker lost")


def test_children_end_when_the_whole_server_is_killed(make_server, tmp_path):
    server = make_server(gpus=[], cpu_workers=1)
    _, token, _ = submit_with_children(server.client(), tmp_path)
    os.killpg(server.proc.pid, signal.SIGKILL)  # server, supervisor and workers at once
    assert_all_end(token)
