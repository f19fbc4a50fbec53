"""Attempt history on both queues: each attempt keeps its worker, device, start, end, exit reason and
error (GET tasks/<id>/attempts, handle.attempts()), a timeout reads as one, and a deleted task's go."""

from __future__ import annotations

from jupyter_taskq.notebook.client import TaskHandle

BACKENDS = ["sqlite", "redis"]  # the same history on both queues


def flaky(marker):
    """Fails its first attempt (no marker yet), succeeds on the next."""
    import os

    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError("first try fails")
    return "ok"


def slow():
    import time

    time.sleep(30)


def test_every_attempt_is_kept_with_its_exit_reason(shared_server, tmp_path):
    client = shared_server.client()
    handle = TaskHandle(client.submit(flaky, (str(tmp_path / "marker"),), max_retries=2).id, client=client)
    assert handle.result(timeout=60) == "ok"
    first, second = handle.attempts()
    assert (first["attempt"], first["reason"], first["status"]) == (1, "error", "RETRY")
    assert first["error"]["type"] == "ValueError" and "first try fails" in first["error"]["message"]
    assert first["error"]["traceback"]
    assert (second["attempt"], second["reason"], second["status"], second["error"]) == (2, "complete", "COMPLETE", None)
    for entry in (first, second):
        assert entry["worker"] and entry["device"] == "CPU"
        assert entry["started_at"] <= entry["ended_at"]
    assert first["ended_at"] <= second["started_at"]


def test_a_timeout_is_an_attempt_that_ended_in_timeout(shared_server):
    client = shared_server.client()
    handle = TaskHandle(client.submit(slow, timeout=0.5, max_retries=0).id, client=client)
    handle.wait(60)
    [only] = handle.attempts()
    assert (only["reason"], only["status"], only["error"]["type"]) == ("timeout", "TIMEOUT", "Timeout")


def test_attempts_of_a_missing_task_answer_404_and_go_with_the_task(shared_server):
    client = shared_server.client()
    answer = client.session.get(f"{shared_server.url}taskq/api/tasks/no-such-task/attempts")
    assert answer.status_code == 404 and "no-such-task" in answer.json()["message"]
    handle = TaskHandle(client.submit(sorted, ([2, 1],)).id, client=client)
    handle.wait(60)
    assert len(handle.attempts()) == 1
    client.delete(handle.id)
    assert client.session.get(f"{shared_server.url}taskq/api/tasks/{handle.id}/attempts").status_code == 404
