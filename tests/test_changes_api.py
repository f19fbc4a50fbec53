"""The endpoints the Lab panel leans on: `GET changes?since=&wait=` answers as soon as a task
changes (so the panel is live without re-reading the list), and `GET tasks?q=` filters by name or id
on the server (so the panel fetches one page of 10,000 tasks, never all of them)."""

from __future__ import annotations

import threading
import time

import pytest


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def changes(client, since="", wait=0):
    response = client.session.get(client.api + "changes", params={"since": since, "wait": wait}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    from conftest import TaskqServer

    server = TaskqServer(tmp_path_factory.mktemp("changes"), gpus=[], cpu_workers=1).start()
    yield server
    server.stop()


def test_a_fresh_or_foreign_cursor_means_refetch_everything(one_worker):
    client = one_worker.client()
    first = changes(client)
    assert first["changed"] is None and first["cursor"]
    assert changes(client, first["cursor"])["changed"] == []
    assert changes(client, "someone-else.3")["changed"] is None
    assert changes(client, "garbage")["changed"] is None


def test_a_long_poll_answers_as_soon_as_a_task_is_submitted_and_runs(one_worker):
    client = one_worker.client()
    cursor = changes(client)["cursor"]
    answers = []

    def poll():
        started = time.monotonic()
        answers.append((changes(client, cursor, wait=20), time.monotonic() - started))

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.3)
    task = client.submit(nap, (0.5,), name="poll-me")
    poller.join(25)
    answer, waited = answers[0]
    assert task.id in answer["changed"]
    assert waited < 15, "the long-poll answered because of the change, not at the end of its 20 s wait"
    # Following the cursor sees the task start and finish, each within a second.
    cursor, seen = answer["cursor"], set()
    deadline = time.monotonic() + 20
    while client.get(task.id)["status"] != "COMPLETE" and time.monotonic() < deadline:
        step = changes(client, cursor, wait=5)
        seen.update(step["changed"] or [])
        cursor = step["cursor"]
    assert task.id in seen and client.get(task.id)["status"] == "COMPLETE"


def test_an_idle_long_poll_waits_the_full_time_then_says_nothing_changed(one_worker):
    client = one_worker.client()
    cursor = changes(client)["cursor"]
    started = time.monotonic()
    answer = changes(client, cursor, wait=1.5)
    assert answer == {"cursor": cursor, "changed": []}
    assert time.monotonic() - started >= 1.4


def test_bad_wait_is_refused_with_a_message(one_worker):
    response = one_worker.client().session.get(one_worker.client().api + "changes", params={"wait": "soon"})
    assert response.status_code == 400 and "'wait' must be a number" in response.json()["message"]


def test_text_filter_matches_name_or_id_and_combines_with_status(one_worker):
    client = one_worker.client()
    tag = f"q{int(time.time() * 1000)}"
    alpha = client.submit(nap, (0,), name=f"{tag}-alpha_1")
    beta = client.submit(nap, (0,), name=f"{tag}-beta%2")
    client.wait([alpha.id, beta.id], timeout=30)
    assert [t["id"] for t in client.session.get(client.api + "tasks", params={"q": f"{tag}-ALPHA"}).json()["tasks"]] == [alpha.id]
    both = client.session.get(client.api + "tasks", params={"q": tag, "status": "COMPLETE"}).json()
    assert both["total"] == 2 and [t["id"] for t in both["tasks"]] == [beta.id, alpha.id]  # newest first
    assert client.session.get(client.api + "tasks", params={"q": tag, "status": "FAILED"}).json()["total"] == 0
    # LIKE wildcards are literal: "%" and "_" match only themselves.
    assert [t["id"] for t in client.session.get(client.api + "tasks", params={"q": "beta%2"}).json()["tasks"]] == [beta.id]
    assert client.session.get(client.api + "tasks", params={"q": f"{tag}-alpha%"}).json()["total"] == 0
    assert [t["id"] for t in client.session.get(client.api + "tasks", params={"q": beta.id[:13]}).json()["tasks"]] == [beta.id]


def test_stats_name_the_task_a_busy_worker_runs(one_worker):
    client = one_worker.client()
    task = client.submit(nap, (3,), name="busy-with-this")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        busy = [w for w in client.stats()["workers"] if w["busy"]]
        if busy:
            break
        time.sleep(0.05)
    assert busy[0]["current_task"] == task.id and busy[0]["current_task_name"] == "busy-with-this"
    client.cancel([task.id])
