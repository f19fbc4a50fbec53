"""Faults: a task's process, a worker, or the whole server killed mid-run. Nothing vanishes."""

from __future__ import annotations

import os
import signal

import psutil
import pytest
import requests

from conftest import TOKEN, wait_for
from jupyter_taskq import payload

BACKENDS = ["sqlite", "redis"]  # the same behaviour on both queues


def hold(pid_file, gate, finished_log=None):
    """Record our pid, wait for the gate, then note that this run finished."""
    import os
    import time

    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    while not os.path.exists(gate):
        time.sleep(0.01)
    if finished_log:
        with open(finished_log, "a") as f:
            f.write("finished\n")
    return "done"


def killed_on_first_attempt(pid_file, marker):
    """The first attempt waits to be killed; the retry returns."""
    import os
    import time

    if os.path.exists(marker):
        return "second attempt"
    open(marker, "w").close()
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)


def exits_hard():
    import os

    os._exit(3)


def segfaults():
    import ctypes

    ctypes.string_at(0)


def double(x):
    return 2 * x


def hold_with_child(pid_file, gate):
    """Start a subprocess, then wait: cancelling must take both down."""
    import os
    import subprocess
    import time

    child = subprocess.Popen(["sleep", "120"])
    with open(pid_file, "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    while not os.path.exists(gate):
        time.sleep(0.01)


def status(client, task_id):
    return client.get(task_id)["status"]


def read_pid(path):
    wait_for(lambda: path.exists() and path.read_text().strip(), 30, message=f"{path.name} written")
    return [int(p) for p in path.read_text().split()]


def gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_killing_a_tasks_process_fails_that_attempt_and_the_retry_completes(make_server, tmp_path):
    client = make_server(gpus=[], cpu_workers=1).client()
    pid_file = tmp_path / "pid"
    handle = client.submit(killed_on_first_attempt, (str(pid_file), str(tmp_path / "marker")), max_retries=1)
    os.kill(read_pid(pid_file)[0], signal.SIGKILL)
    assert handle.result(timeout=30) == "second attempt"
    assert client.get(handle.id)["attempt"] == 2

    pid_file.unlink()
    (tmp_path / "marker").unlink()
    once = client.submit(killed_on_first_attempt, (str(pid_file), str(tmp_path / "marker")), max_retries=0)
    os.kill(read_pid(pid_file)[0], signal.SIGKILL)
    wait_for(lambda: status(client, once.id) == "FAILED", 20, message="FAILED")
    error = client.get(once.id)["error"]
    assert error["type"] == "Crashed" and "killed by SIGKILL" in error["message"]


def test_hard_exit_and_segfault_fail_the_attempt_not_the_worker(make_server):
    server = make_server(gpus=[], cpu_workers=1)
    client = server.client()
    worker_pid = server.worker_pids()["cpu0"]
    for fn, message in ((exits_hard, "exited with status 3"), (segfaults, "killed by SIGSEGV")):
        handle = client.submit(fn, max_retries=0)
        wait_for(lambda: status(client, handle.id) == "FAILED", 20, message=f"{fn.__name__} FAILED")
        assert message in client.get(handle.id)["error"]["message"]
    assert client.submit(double, (21,)).result(timeout=20) == 42
    assert server.worker_pids()["cpu0"] == worker_pid  # the same worker served them all


def test_a_killed_worker_is_restarted_and_its_task_requeued(make_server, tmp_path):
    server = make_server(gpus=[], cpu_workers=1)
    client = server.client()
    pid_file, gate = tmp_path / "pid", tmp_path / "gate"
    handle = client.submit(hold, (str(pid_file), str(gate)), max_retries=1)
    task_pid = read_pid(pid_file)[0]
    old_worker = server.worker_pids()["cpu0"]
    os.kill(old_worker, signal.SIGKILL)
    wait_for(lambda: server.worker_pids().get("cpu0") not in (None, old_worker), 30, message="worker restarted")
    wait_for(lambda: gone(task_pid), 10, message="the attempt's process gone with its worker")
    pid_file.unlink(missing_ok=True)
    wait_for(lambda: client.get(handle.id)["attempt"] == 2, 30, message="a second attempt")
    gate.touch()
    assert handle.result(timeout=30) == "done"

    gate.unlink()
    pid_file.unlink(missing_ok=True)
    once = client.submit(hold, (str(pid_file), str(gate)), max_retries=0)
    read_pid(pid_file)
    os.kill(server.worker_pids()["cpu0"], signal.SIGKILL)
    wait_for(lambda: status(client, once.id) == "FAILED", 30, message="FAILED")
    assert client.get(once.id)["error"]["message"].startswith("worker lost")


def test_a_killed_server_loses_nothing(make_server, tmp_path):
    server = make_server(gpus=[], cpu_workers=2)
    client = server.client()
    gate = tmp_path / "gate"
    handles = []
    for i in range(6):
        task_dir = tmp_path / f"task{i}"
        task_dir.mkdir()
        handles.append(client.submit(hold, (str(task_dir / "pid"), str(gate), str(task_dir / "finished")),
                                     max_retries=1 if i % 3 else 0))
    wait_for(lambda: sorted(status(client, h.id) for h in handles).count("RUNNING") == 2, 30,
             message="two tasks running")
    running = [h for h in handles if status(client, h.id) == "RUNNING"]
    attempt_pids = [read_pid(tmp_path / f"task{handles.index(h)}" / "pid")[0] for h in running]
    server.kill()
    for pid in attempt_pids:  # the attempts died with the server
        wait_for(lambda: gone(pid), 10, message="attempt process gone")

    server.start()
    client = server.client()
    gate.touch()
    tasks = client.wait([h.id for h in handles], timeout=60)
    for i, task in enumerate(tasks):
        finished = tmp_path / f"task{i}" / "finished"
        if task["status"] == "COMPLETE":
            assert finished.read_text() == "finished\n"  # exactly one run finished
        else:
            assert task["status"] == "FAILED" and task["error"]["message"].startswith("worker lost"), task
            assert handles[i] in running and task["max_retries"] == 0
    assert sum(t["status"] == "COMPLETE" for t in tasks) >= 4
    assert client.list(status=["RUNNING", "PENDING", "RETRY"])["total"] == 0


def test_cancelling_a_running_task_kills_it_and_its_subprocesses(make_server, tmp_path):
    client = make_server(gpus=[], cpu_workers=1).client()
    pid_file = tmp_path / "pids"
    handle = client.submit(hold_with_child, (str(pid_file), str(tmp_path / "never")))
    task_pid, child_pid = read_pid(pid_file)
    assert handle.cancel()
    wait_for(lambda: status(client, handle.id) == "CANCELLED", 5, message="CANCELLED within 5 s")
    wait_for(lambda: gone(task_pid) and gone(child_pid), 5, message="the task and its subprocess gone")


def note_and_hold(log, name, gate):
    """Note that this attempt started, then wait for the gate."""
    import os
    import time

    with open(log, "a") as f:
        f.write(name + "\n")
    while not os.path.exists(gate):
        time.sleep(0.01)
    return name


def test_a_task_interrupted_by_a_server_restart_counts_an_attempt_and_keeps_its_place(make_server, tmp_path):
    """SIGTERM (a clean restart) re-runs the task as its next attempt, ahead of tasks submitted after it."""
    server = make_server(gpus=[], cpu_workers=1)
    client = server.client()
    order, gate = tmp_path / "order", tmp_path / "gate"
    first = client.submit(note_and_hold, (str(order), "first", str(gate)))
    wait_for(lambda: status(client, first.id) == "RUNNING", 30, message="first RUNNING")
    later = [client.submit(note_and_hold, (str(order), name, str(gate))) for name in ("second", "third")]
    urgent = client.submit(note_and_hold, (str(order), "urgent", str(gate)), priority=1)
    server.stop()
    server.start()
    client = server.client()
    gate.touch()
    tasks = client.wait([first.id, urgent.id] + [h.id for h in later], timeout=60)
    assert [t["status"] for t in tasks] == ["COMPLETE"] * 4
    assert order.read_text().split() == ["first", "urgent", "first", "second", "third"]
    assert client.get(first.id)["attempt"] == 2


def test_a_failure_around_an_attempt_ends_it_and_the_worker_goes_on(make_server):
    """A payload naming an interpreter that exits at once (``python=/bin/false``): each attempt fails
    with what happened, the task ends FAILED after its retry, and the worker takes the next task."""
    server = make_server(gpus=[], cpu_workers=1)
    client = server.client()
    context = payload.calling_context()
    context["python"] = "/bin/false"
    response = requests.post(server.url + "taskq/api/tasks", params={"max_retries": 1},
                             data=payload.dumps_call(double, (21,), context=context),
                             headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/octet-stream"})
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]
    wait_for(lambda: status(client, task_id) == "FAILED", 30, message="FAILED")
    task = client.get(task_id)
    assert task["attempt"] == 2 and "exited with status 1" in task["error"]["message"]
    assert client.submit(double, (21,)).result(timeout=20) == 42


def test_a_store_refusing_writes_mid_attempt_ends_the_attempt_and_work_resumes(make_server, tmp_path, backend):
    """Redis refusing every write (as when it cannot persist): the running attempt is ended rather than
    left RUNNING, the worker waits until it can record that, and the task's retry completes."""
    if backend != "redis":
        pytest.skip("on SQLite the same is the full-disk test (tests/test_full_disk.py)")
    import redis

    server = make_server(gpus=[], cpu_workers=1)
    client = server.client()
    pid_file, gate = tmp_path / "pid", tmp_path / "gate"
    handle = client.submit(hold, (str(pid_file), str(gate)), max_retries=1)
    task_pid = read_pid(pid_file)[0]
    admin = redis.Redis.from_url(server.redis.url)
    admin.config_set("min-replicas-to-write", 1)  # every write now fails with NOREPLICAS
    try:
        wait_for(lambda: gone(task_pid), 20, message="the attempt ended")
    finally:
        admin.config_set("min-replicas-to-write", 0)
    gate.touch()
    assert handle.result(timeout=60) == "done"
    task = client.get(handle.id)
    assert task["attempt"] == 2 and task["status"] == "COMPLETE"
