"""Waiting for a result is not an error: the long-poll's "not yet" is a 202, not a 409 warning in the
server's log on every ``result()`` call."""

from __future__ import annotations

import requests

from conftest import TOKEN, run_coroutine, wait_for

AUTH = {"Authorization": f"token {TOKEN}"}


def wait_for_file(path):
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.05)
    return "done"


def test_a_result_still_running_after_the_wait_is_a_202_and_no_warning(shared_server, tmp_path):
    client = shared_server.client()
    gate = tmp_path / "gate"
    handle = client.submit(wait_for_file, (str(gate),))
    wait_for(lambda: client.get(handle.id)["status"] == "RUNNING", 30, message="the task to run")
    url = shared_server.url + f"taskq/api/tasks/{handle.id}/result"
    response = requests.get(url, headers=AUTH, params={"wait": 0.3})
    assert response.status_code == 202 and response.json()["status"] == "RUNNING"
    assert requests.get(url, headers=AUTH).status_code == 409  # asked without waiting: still a conflict
    gate.touch()
    assert handle.result(timeout=30) == "done"
    log = shared_server.log_path.read_text()
    assert f"409 GET /taskq/api/tasks/{handle.id}/result?wait" not in log
    assert f"202 GET /taskq/api/tasks/{handle.id}/result?wait" not in log  # success-level: not logged as a warning


def test_a_change_heard_while_the_store_is_being_read_wakes_the_wait(tmp_path, monkeypatch):
    """The worker's ring can come while the server is still reading the task's state off the loop (the task
    ended just after the query). That ring must wake the waiting request; before, it woke nobody and
    the result reached the client only at the feed's re-check, about a second late."""
    import asyncio
    import threading

    from jupyter_taskq.backends.doorbell import Doorbell
    from jupyter_taskq.server import changes

    monkeypatch.setattr(changes, "RECHECK", 600.0)  # a missed ring would now cost ten minutes, not a second
    bell = Doorbell(tmp_path / "events.fifo")
    state = {"finished": False}

    async def main():
        feed = changes.ChangeFeed(bell)
        feed.start()
        looks = []

        async def done(look):
            looks.append(state["finished"])
            if len(looks) == 1:  # the first look reads "running"; meanwhile the task ends and the worker rings
                def worker_finishes():
                    state["finished"] = True
                    Doorbell(bell.path).ring(b"t1\n")
                thread = threading.Thread(target=worker_finishes)
                thread.start()
                thread.join()
                await asyncio.sleep(0.2)  # the ring is heard on the loop before this look answers
                return False
            return state["finished"]

        try:
            return await asyncio.wait_for(feed.wait_until({"t1"}, done, 600.0), 30), looks
        finally:
            feed.stop()

    finished, looks = run_coroutine(main())
    assert finished and looks == [False, True]


def test_a_wait_looks_at_the_tasks_that_rang_and_still_sees_one_whose_ring_was_lost(tmp_path, monkeypatch):
    """A wait on many tasks re-reads only those heard to change (a 2,000-task map is not re-read whole at
    every ring), yet a task that finished without a ring (a lost note, a worker on another machine)
    is still seen at the feed's re-check."""
    import asyncio

    from jupyter_taskq.backends.doorbell import Doorbell
    from jupyter_taskq.server import changes

    monkeypatch.setattr(changes, "RECHECK", 0.3)
    bell = Doorbell(tmp_path / "events.fifo")
    finished: set[str] = set()
    looks: list[set[str] | None] = []

    async def main():
        feed = changes.ChangeFeed(bell)
        feed.start()
        unfinished = {"a", "b", "c"}

        async def done(look):
            looks.append(None if look is None else set(look))
            unfinished.difference_update((unfinished if look is None else unfinished & look) & finished)
            if len(looks) == 1:  # after the first look: "a" ends and rings; "b" ends silently
                finished.update({"a", "b"})
                Doorbell(bell.path).ring(b"a\n")
            elif "a" not in unfinished and "c" not in finished:
                finished.add("c")  # "c" ends silently too, later
            return not unfinished

        try:
            return await asyncio.wait_for(feed.wait_until(unfinished, done, 60.0), 30)
        finally:
            feed.stop()

    assert run_coroutine(main())
    assert looks[0] is None and looks[1] == {"a"}  # woken by "a": only "a" is read
    assert looks[-1] is None  # "b" and "c" were found by a full re-check
