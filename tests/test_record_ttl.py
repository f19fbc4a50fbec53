"""Issue 12: finished task records are purged after ``record_ttl``, and the state directory shrinks back.

Before, rows were never purged: +5.8 MB of state per 20,000 tasks for good. Here 3,000 tasks run,
their records go after ``record_ttl`` (as DELETE would), and the state directory (database and WAL
included) comes back near its size before them.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from conftest import wait_for
from jupyter_taskq.status import TaskStatus as S
from jupyter_taskq.backends.sqlite_store import SqliteTaskStore


def noop(i):
    return i


def state_size(root) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass
    return total


@pytest.mark.slow
def test_finished_records_are_purged_and_the_state_dir_shrinks_back(make_server):
    server = make_server(gpus=[], cpu_workers=2, record_ttl=3, result_ttl=0, cleanup_interval=0.5)
    client = server.client()
    assert client.submit(noop, (0,)).result(timeout=30) == 0
    wait_for(lambda: client.list()["total"] == 0, 30, 0.2, "the first task's record to be purged")
    baseline = state_size(server.state_dir)

    handles = client.submit_many(noop, range(3000), max_retries=0)
    client.wait([h.id for h in handles], timeout=300)
    grown = state_size(server.state_dir)
    assert client.list()["total"] > 0

    wait_for(lambda: client.list()["total"] == 0, 60, 0.5, "every finished record purged after record_ttl")
    assert client.tasks_by_id([handles[0].id])[0]["status"] == "LOST"  # gone, and said so
    wait_for(lambda: state_size(server.state_dir) <= baseline + 1024 * 1024, 60, 0.5,
             f"the state dir back near its baseline ({baseline} bytes; {grown} at the peak)")
    print(f"state dir: baseline {baseline} B, after 3,000 tasks {grown} B, "
          f"after the purge {state_size(server.state_dir)} B")
    assert client.submit(noop, (7,)).result(timeout=30) == 7  # the queue works on


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        store = SqliteTaskStore(str(tmp_path / "state.db"))
    else:
        from jupyter_taskq.backends.redis_store import RedisTaskStore

        store = RedisTaskStore(request.getfixturevalue("redis_server").url, prefix=f"t-{uuid.uuid4().hex[:8]}:")
    yield store
    store.close()


def test_both_stores_name_the_records_due_for_purging(store):
    now = time.time()
    tasks = {label: {"id": uuid.uuid4().hex, "name": label, "status": S.PENDING, "pool": "cpu", "created_at": now,
                     "updated_at": now, "max_retries": 0} for label in ("old", "recent", "waiting", "running")}
    store.create_many(list(tasks.values()))
    store.transition(tasks["old"]["id"], S.FAILED, [S.PENDING], ended_at=now - 100)
    store.transition(tasks["recent"]["id"], S.COMPLETE, [S.PENDING], ended_at=now - 1)
    store.claim(tasks["running"]["id"], "w", "w:1")
    assert store.finished_before(now - 10) == [tasks["old"]["id"]]  # not recent, not unfinished ones
    assert set(store.finished_before(now)) == {tasks["old"]["id"], tasks["recent"]["id"]}
    store.compact()  # nothing much to give back: harmless
