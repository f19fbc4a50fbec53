"""Every status of Beam's lifecycle, reached for real on a real server and real workers."""

from __future__ import annotations

import time

import pytest

from conftest import wait_for
from jupyter_taskq.notebook.client import TaskFailed

BACKENDS = ["sqlite", "redis"]  # the engine behaves the same on both queues


def add(a, b):
    return a + b


def always_fails(message):
    raise ValueError(message)


def sleep_then_return(seconds, value=None):
    import time

    time.sleep(seconds)
    return value


def wait_for_file(path, timeout=60):
    """Block inside a task until the test creates ``path`` (no sleeping on guesses)."""
    import os
    import time

    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return "released"


def append_line(path, text):
    with open(path, "a") as f:
        f.write(text + "\n")
    return text


def status_of(client, task_id):
    return client.get(task_id)["status"]


@pytest.fixture
def client(shared_server):
    """The module's one server (per backend), for the tests that look only at the tasks they submit; the
    listing and stats tests count the whole queue, so they start a server of their own (``server``)."""
    return shared_server.client()


def test_result_and_task_fields(client):
    handle = client.submit(add, (2, 3), name="adder")
    assert handle.result(timeout=30) == 5
    task = client.get(handle.id)
    assert task["status"] == "COMPLETE"
    assert task["name"] == "adder"
    assert (task["attempt"], task["max_retries"]) == (1, 3)
    assert task["worker"].startswith("cpu")
    assert task["created_at"].endswith("Z") and task["started_at"] and task["ended_at"]
    assert task["error"] is None and task["outputs"] == []
    assert set(task["stats"]) == {"queue_depth", "active_workers"}
    assert task["stats"]["active_workers"] == 4


def test_failing_task_is_retried_then_failed_with_remote_traceback(client):
    handle = client.submit(always_fails, ("bad input 42",), max_retries=2, retry_delay=0.2)
    seen = set()

    def ended():
        status = status_of(client, handle.id)
        seen.add(status)
        return status == "FAILED"

    wait_for(ended, 30, message="FAILED")
    task = client.get(handle.id)
    assert "RETRY" in seen
    assert task["attempt"] == 3  # the first attempt and its two retries
    assert task["error"]["type"] == "ValueError"
    assert task["error"]["message"] == "bad input 42"
    assert "always_fails" in task["error"]["traceback"]
    with pytest.raises(ValueError, match="bad input 42") as info:
        handle.result(timeout=10)
    assert "always_fails" in str(info.value.__cause__)  # the remote traceback is chained


def test_retry_delay_with_backoff_spaces_attempts(client):
    start = time.monotonic()
    handle = client.submit(always_fails, ("x",), max_retries=2, retry_delay=0.5, retry_backoff=2)
    wait_for(lambda: status_of(client, handle.id) == "FAILED", 30, message="FAILED")
    # attempts at ~0 s, ~0.5 s, ~1.5 s: backoff doubled the second delay
    assert time.monotonic() - start >= 1.5


def test_timeout_kills_the_attempt(client):
    handle = client.submit(sleep_then_return, (60,), timeout=1)
    wait_for(lambda: status_of(client, handle.id) == "TIMEOUT", 15, message="TIMEOUT")
    task = client.get(handle.id)
    assert task["attempt"] == 1  # a timeout is final, not retried
    assert "timeout of 1 s" in task["error"]["message"]
    with pytest.raises(TaskFailed, match="TIMEOUT"):
        handle.result(timeout=5)


def occupy_the_only_worker(make_server, tmp_path):
    """A server with one CPU worker, kept busy by a task that waits for ``tmp_path/gate``."""
    client = make_server(gpus=[], cpu_workers=1).client()
    blocker = client.submit(wait_for_file, (str(tmp_path / "gate"),))
    wait_for(lambda: status_of(client, blocker.id) == "RUNNING", 20, message="blocker RUNNING")
    return client, blocker


def test_cancel_pending_never_runs_and_cancel_running_ends_cancelled(make_server, tmp_path):
    client, blocker = occupy_the_only_worker(make_server, tmp_path)
    marker = tmp_path / "ran"
    queued = client.submit(append_line, (str(marker), "ran"))
    assert status_of(client, queued.id) == "PENDING"

    reply = client.cancel([queued.id, blocker.id, "no-such-task"])
    assert set(reply["cancelled"]) == {queued.id, blocker.id}
    assert reply["not_cancelled"] == [{"id": "no-such-task", "reason": "no such task"}]
    assert status_of(client, queued.id) == "CANCELLED"
    wait_for(lambda: status_of(client, blocker.id) == "CANCELLED", 5, message="running task CANCELLED within 5 s")

    # the worker is free again, and the cancelled task never ran
    assert client.submit(add, (1, 1)).result(timeout=20) == 2
    assert not marker.exists()
    again = client.cancel([queued.id])
    assert again["not_cancelled"] == [{"id": queued.id, "reason": "already CANCELLED"}]


def test_expired_task_never_runs(make_server, tmp_path):
    client, blocker = occupy_the_only_worker(make_server, tmp_path)
    gate = tmp_path / "gate"
    marker = tmp_path / "ran"
    late = client.submit(append_line, (str(marker), "ran"), expires=0.5)
    wait_for(lambda: status_of(client, late.id) == "EXPIRED", 10, message="EXPIRED")
    gate.touch()
    assert blocker.result(timeout=20) == "released"
    assert client.submit(add, (1, 2)).result(timeout=20) == 3  # the queue moved past it
    assert not marker.exists()
    assert client.get(late.id)["error"]["type"] == "Expired"


def test_higher_priority_runs_first(make_server, tmp_path):
    server = make_server(gpus=[], cpu_workers=1)
    client = server.client()
    gate, order = tmp_path / "gate", tmp_path / "order"
    blocker = client.submit(wait_for_file, (str(gate),))
    wait_for(lambda: status_of(client, blocker.id) == "RUNNING", 20, message="blocker RUNNING")
    low = [client.submit(append_line, (str(order), f"low{i}"), priority=0) for i in range(3)]
    high = client.submit(append_line, (str(order), "high"), priority=10)
    gate.touch()
    client.wait([h.id for h in [*low, high]], timeout=30)
    assert order.read_text().split() == ["high", "low0", "low1", "low2"]


def test_retry_a_finished_task_makes_a_new_task(client):
    first = client.submit(always_fails, ("once",), max_retries=0)
    wait_for(lambda: status_of(client, first.id) == "FAILED", 20, message="FAILED")
    second = first.retry()
    assert second.id != first.id
    wait_for(lambda: status_of(client, second.id) == "FAILED", 20, message="retried task FAILED")
    task = client.get(second.id)
    assert task["retry_of"] == first.id and task["max_retries"] == 0

    done = client.submit(add, (20, 22))
    assert done.result(timeout=20) == 42
    assert done.retry().result(timeout=20) == 42


def test_retry_refused_while_running_and_delete_removes_finished(client, tmp_path):
    gate = tmp_path / "gate"
    running = client.submit(wait_for_file, (str(gate),))
    wait_for(lambda: status_of(client, running.id) == "RUNNING", 20, message="RUNNING")
    with pytest.raises(Exception, match="409"):
        running.retry()
    with pytest.raises(Exception, match="409"):
        client.delete(running.id)
    gate.touch()
    running.result(timeout=20)
    client.delete(running.id)
    with pytest.raises(Exception, match="404"):
        client.get(running.id)


def test_listing_is_newest_first_filtered_and_paginated(server):
    client = server.client()  # a queue of its own: it counts every task
    handles = [client.submit(add, (i, 0)) for i in range(5)]
    client.wait([h.id for h in handles], timeout=30)
    page = client.list(limit=2)
    assert [t["id"] for t in page["tasks"]] == [handles[4].id, handles[3].id]
    assert page["total"] == 5
    assert [t["id"] for t in client.list(limit=2, offset=2)["tasks"]] == [handles[2].id, handles[1].id]
    assert client.list(status="COMPLETE")["total"] == 5
    assert client.list(status=["FAILED", "PENDING"])["total"] == 0


def test_stats_report_workers_and_counts(server):
    client = server.client()  # a queue of its own: it counts every task
    client.submit(add, (1, 1)).result(timeout=20)
    stats = client.stats()
    assert stats["queue_depth"] == {"cpu": 0, "gpu": 0}
    assert sorted(w["name"] for w in stats["workers"]) == ["cpu0", "cpu1", "gpu0", "gpu1"]
    assert all(w["alive"] and w["pid"] and w["last_heartbeat"] for w in stats["workers"])
    assert {w["name"]: w["device"] for w in stats["workers"]}["gpu1"] == "1"
    assert stats["counts"]["COMPLETE"] == 1
