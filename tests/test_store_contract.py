"""One backend contract, every backend: the SQLite file, a real Redis server and the in-process memory
backend answer every question the server, the workers and the reaper ask in the same way (the task store),
and keep the rest of ``backends.base.Backend`` alike: queues per pool, work bells and the events feed,
what a child process needs, the health check, the secrets and the schedule records. A new backend is one
module that passes this file (docs/backends.md)."""

from __future__ import annotations

import select
import threading
import time
import uuid

import pytest

from jupyter_taskq.backends import (BACKENDS, BackendError, backend_class, environment_secrets, open_backend,
                                    open_child_backend, pick_backend)
from jupyter_taskq.backends.hueyqueue import AttemptSpec, enqueue_attempt, enqueue_attempts
from jupyter_taskq.backends.sqlite_store import SqliteTaskStore
from jupyter_taskq.status import TaskStatus as S

BACKEND_NAMES = list(BACKENDS)  # every built-in backend; a new one joins by its line in the picker


def open_for_test(name: str, request, tmp_path):
    """``name``'s backend over a fresh state directory (and, for Redis, a fresh key prefix on the test server)."""
    url = request.getfixturevalue("redis_server").url if backend_class(name).shared else ""
    return open_backend(name, url, state_dir=tmp_path / "state", prefix=f"test-{uuid.uuid4().hex[:8]}:")


@pytest.fixture(params=BACKEND_NAMES)
def opened(request, tmp_path):
    """A backend of each kind (named ``opened``: conftest parametrizes tests that take ``backend`` itself)."""
    return open_for_test(request.param, request, tmp_path)


@pytest.fixture(params=BACKEND_NAMES)
def store(request, tmp_path):
    store = open_for_test(request.param, request, tmp_path).open_store()
    yield store
    store.close()


def new_task(pool="cpu", **fields) -> dict:
    now = time.time()
    return {"id": uuid.uuid4().hex, "name": "f", "status": S.PENDING, "pool": pool, "created_at": now,
            "updated_at": now, "max_retries": 3, **fields}


def test_create_get_and_defaults(store):
    task = new_task(priority=5, error={"type": "X", "message": "m"}, expires_at=None)
    store.create(task)
    got = store.get(task["id"])
    assert got["status"] == "PENDING" and got["priority"] == 5 and got["attempt"] == 0
    assert got["error"] == {"type": "X", "message": "m"}
    assert got["progress"] is None and got["cancel_requested"] == 0 and got["result_expired"] == 0
    assert store.get("nope") is None


def test_listing_newest_first_filtered_paginated_and_counted(store):
    tasks = [new_task(pool="gpu" if i % 3 == 0 else "cpu") for i in range(12)]
    store.create_many(tasks[:6])
    for task in tasks[6:]:
        store.create(task)
    ids = [t["id"] for t in tasks]
    assert [t["id"] for t in store.list(limit=5)] == ids[::-1][:5]
    assert [t["id"] for t in store.list(limit=5, offset=10)] == ids[::-1][10:]
    for task_id in ids[:4]:
        assert store.transition(task_id, S.CANCELLED, [S.PENDING])
    assert [t["id"] for t in store.list([S.CANCELLED])] == ids[:4][::-1]
    both = store.list([S.CANCELLED, S.PENDING], limit=3, offset=7)
    assert [t["id"] for t in both] == ids[::-1][7:10]
    assert [t["id"] for t in store.list(ids=ids[2:6], statuses=[S.PENDING])] == ids[4:6][::-1]
    assert store.count() == 12 and store.count([S.CANCELLED]) == 4 and store.count([S.PENDING, S.CANCELLED]) == 12
    counts = store.counts_by_status()
    assert counts["CANCELLED"] == 4 and counts["PENDING"] == 8 and counts["RUNNING"] == 0
    assert store.waiting_by_pool() == {"cpu": 6, "gpu": 2}
    assert store.statuses(ids[3:5] + ["missing"]) == {ids[3]: "CANCELLED", ids[4]: "PENDING"}


def test_transitions_are_conditional(store):
    task = new_task()
    store.create(task)
    assert not store.transition(task["id"], S.COMPLETE, [S.RUNNING])
    claimed = store.claim(task["id"], "cpu0", "inst-1")
    assert claimed["status"] == "RUNNING" and claimed["attempt"] == 1 and claimed["worker"] == "cpu0"
    assert store.claim(task["id"], "cpu1", "inst-2") is None, "a running task cannot be claimed twice"
    assert store.running()[0]["id"] == task["id"]
    assert not store.transition(task["id"], S.FAILED, [S.RUNNING], attempt=2), "wrong attempt"
    assert store.transition(task["id"], S.RETRY, [S.RUNNING], attempt=1, error={"type": "E", "message": "boom"})
    again = store.claim(task["id"], "cpu1", "inst-2")
    assert again["attempt"] == 2 and again["cancel_requested"] == 0
    assert store.release(task["id"], 2)
    released = store.get(task["id"])
    assert released["status"] == "PENDING" and released["attempt"] == 1 and released["worker"] is None
    assert store.waiting_by_pool() == {"cpu": 1}
    assert store.claim(task["id"], "cpu0", "i")["attempt"] == 2
    assert store.transition(task["id"], S.COMPLETE, [S.RUNNING], attempt=2, result_size=3)
    done = store.get(task["id"])
    assert done["status"] == "COMPLETE" and done["ended_at"] is not None and done["result_size"] == 3
    assert store.running() == [] and store.waiting_by_pool() == {}


def test_a_cancel_is_final_and_a_superseded_attempt_is_fenced(store):
    """Issue 25: a task asked to cancel while it ran never runs again, whoever put it back in the queue
    (the claim ends it CANCELLED); a late write of an attempt that was superseded (its worker was presumed
    lost, the task requeued and claimed again) is refused, for the status and for progress alike."""
    cancelled = new_task()
    store.create(cancelled)
    store.claim(cancelled["id"], "cpu0", "inst-1")
    assert store.request_cancel(cancelled["id"]) and store.cancel_requested(cancelled["id"])
    assert store.transition(cancelled["id"], S.RETRY, [S.RUNNING], attempt=1, error={"type": "WorkerLost"})
    assert store.claim(cancelled["id"], "cpu1", "inst-2") is None
    ended = store.get(cancelled["id"])
    assert ended["status"] == "CANCELLED" and ended["attempt"] == 1 and ended["ended_at"] is not None
    assert ended["error"]["type"] == "Cancelled"
    assert store.counts_by_status()["CANCELLED"] == 1 and store.waiting_by_pool() == {}

    task = new_task()
    store.create(task)
    store.claim(task["id"], "cpu0", "inst-1")
    assert store.transition(task["id"], S.RETRY, [S.RUNNING], attempt=1, error={"type": "WorkerLost"})
    assert store.claim(task["id"], "cpu1", "inst-2")["attempt"] == 2
    # the first attempt's worker comes back: its progress and its result are refused
    assert not store.transition(task["id"], S.RUNNING, [S.RUNNING], attempt=1, progress={"done": 9})
    assert not store.transition(task["id"], S.COMPLETE, [S.RUNNING], attempt=1, result_size=1)
    assert store.transition(task["id"], S.RUNNING, [S.RUNNING], attempt=2, progress={"done": 1})
    current = store.get(task["id"])
    assert current["status"] == "RUNNING" and current["progress"] == {"done": 1} and current["attempt"] == 2
    assert [a["ended_at"] is None for a in store.attempts(task["id"])] == [False, True], "progress ends no attempt"


def test_racing_claims_have_one_winner(store):
    task = new_task()
    store.create(task)
    winners = []

    def claim(n):
        if store.claim(task["id"], f"w{n}", f"i{n}"):
            winners.append(n)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


def test_reaper_questions(store):
    now = time.time()
    expiring = new_task(expires_at=now - 1)
    later = new_task(expires_at=now + 100)
    hooked = new_task(callback_url="http://127.0.0.1:1/hook", result_ttl=10)
    for task in (expiring, later, hooked):
        store.create(task)
    assert store.overdue_waiting(now) == [expiring["id"]]
    store.claim(hooked["id"], "w", "i")
    assert store.callbacks_due() == []
    store.transition(hooked["id"], S.COMPLETE, [S.RUNNING], ended_at=now - 20)
    assert store.callbacks_due() == [hooked["id"]]
    assert store.results_older_than(now) == [hooked["id"]]
    assert store.results_older_than(now - 15) == []
    store.update_fields(hooked["id"], callback_done=1, result_expired=1)
    assert store.callbacks_due() == [] and store.results_older_than(now) == []
    assert store.transition(expiring["id"], S.EXPIRED, [S.PENDING])
    assert store.overdue_waiting(now) == []
    assert store.delete(hooked["id"]) and store.get(hooked["id"]) is None and not store.delete(hooked["id"])
    assert store.count() == 2


def test_workers_register_heartbeat_and_leave(store):
    worker = {"name": "gpu0", "instance": "a", "pool": "gpu", "device": "0", "host": "h", "pid": 1,
              "started_at": time.time(), "heartbeat_at": time.time(), "state": "idle", "current_task": None}
    store.register_worker(worker)
    store.heartbeat("gpu0", "a", "busy", "t1")
    (seen,) = store.workers()
    assert seen["state"] == "busy" and seen["current_task"] == "t1" and seen["pid"] == 1
    store.heartbeat("gpu0", "old-instance", "idle", None)
    assert store.workers()[0]["state"] == "busy", "a replaced instance's heartbeat is ignored"
    store.remove_worker("gpu0", "old-instance")
    assert len(store.workers()) == 1
    store.remove_worker("gpu0", "a")
    assert store.workers() == []


def test_text_filter_and_fingerprint(store):
    names = ["train_resnet", "train_vit", "evaluate", "100%_done", "under_score"]
    tasks = [new_task(name=n) for n in names]
    before = store.fingerprint()
    store.create_many(tasks)
    after_create = store.fingerprint()
    assert after_create != before
    assert [t["name"] for t in store.list(text="TRAIN")] == ["train_vit", "train_resnet"]
    assert store.count(text="train") == 2 and store.count(text="nothing") == 0
    assert [t["name"] for t in store.list(text="%")] == ["100%_done"], "% is matched literally"
    assert [t["name"] for t in store.list(text="_s")] == ["under_score"], "_ is matched literally"
    assert [t["id"] for t in store.list(text=tasks[2]["id"][:12])] == [tasks[2]["id"]]
    store.transition(tasks[0]["id"], S.CANCELLED, [S.PENDING])
    after_update = store.fingerprint()
    assert after_update != after_create
    assert [t["name"] for t in store.list([S.CANCELLED], text="train")] == ["train_resnet"]
    assert store.count([S.PENDING], text="train") == 1
    assert [t["name"] for t in store.list(text="train", limit=1, offset=1)] == ["train_resnet"]
    store.delete(tasks[0]["id"])
    assert store.fingerprint() != after_update


def test_the_sweep_forgets_workers_silent_for_ten_minutes(store):
    from jupyter_taskq.recovery import FORGET_WORKER_AFTER, recover_lost_tasks

    now = time.time()
    for name, heartbeat in (("gone/cpu0", now - FORGET_WORKER_AFTER - 5), ("late/cpu0", now - 30), ("here/cpu0", now)):
        store.register_worker({"name": name, "instance": name + "-1", "pool": "cpu", "device": None, "host": "h",
                               "pid": 1, "started_at": now - 3600, "heartbeat_at": heartbeat, "state": "idle",
                               "current_task": None})
    recover_lost_tasks(store, {}, stale_after=10)
    assert [w["name"] for w in store.workers()] == ["here/cpu0", "late/cpu0"], "dead for 30 s still shows"


def test_blob_references_count_tasks_whose_files_are_kept(store):
    """A shared part (jupyter_taskq/blobs.py) goes once no task that names it keeps its files."""
    key, other = "a" * 64, "b" * 64
    tasks = [new_task(blob=key) for _ in range(3)] + [new_task(blob=other), new_task(blob=None)]
    store.create_many(tasks[:2])
    for task in tasks[2:]:
        store.create(task)
    assert store.blob_refs(key) == 3 and store.blob_refs(other) == 1 and store.blob_refs("c" * 64) == 0
    assert store.get(tasks[0]["id"])["blob"] == key and store.get(tasks[4]["id"])["blob"] is None
    assert store.transition(tasks[0]["id"], S.CANCELLED, [S.PENDING])
    assert store.blob_refs(key) == 3, "a finished task keeps its files until its TTL or delete"
    store.update_fields(tasks[0]["id"], result_expired=1)
    assert store.blob_refs(key) == 2
    store.delete(tasks[1]["id"])
    store.delete(tasks[0]["id"])
    assert store.blob_refs(key) == 1
    store.delete(tasks[2]["id"])
    assert store.blob_refs(key) == 0 and store.blob_refs(other) == 1


def test_owners_filter_and_per_owner_questions(store):
    """Issue 15: every task has an owner; a user's listing, counts, next waiting task, running GPUs and
    GPU time are asked per owner, the same on both stores."""
    a = [new_task(pool="gpu", gpu=1, owner="alice", priority=p) for p in (0, 5, 5, 0)]
    b = [new_task(pool="gpu", gpu=1, owner="bob"), new_task(pool="cpu", owner="bob", priority=9)]
    store.create_many(a)
    for task in b:
        store.create(task)
    assert store.get(a[0]["id"])["owner"] == "alice"
    assert [t["id"] for t in store.list(owner="alice")] == [t["id"] for t in a][::-1]
    assert [t["id"] for t in store.list(owner="bob", limit=1, offset=1)] == [b[0]["id"]]
    assert store.list(owner="carol") == [] and store.count(owner="carol") == 0
    assert store.count(owner="alice") == 4 and store.count([S.PENDING], owner="bob") == 2
    assert [t["id"] for t in store.list(ids=[a[0]["id"], b[0]["id"]], owner="bob")] == [b[0]["id"]]
    heads = {h["owner"]: h for h in store.waiting_heads(["gpu"])}
    assert heads["alice"]["id"] == a[1]["id"] and heads["alice"]["priority"] == 5, "highest priority, then oldest"
    assert heads["bob"]["id"] == b[0]["id"], "bob's CPU task is not in the GPU pool"
    assert heads["alice"]["created_at"] == a[1]["created_at"]
    store.transition(a[1]["id"], S.RETRY, [S.PENDING])
    pending = {h["owner"]: h["id"] for h in store.waiting_heads(["gpu"], statuses=[S.PENDING])}
    assert pending["alice"] == a[2]["id"], "only tasks waiting for their first attempt"
    store.transition(a[1]["id"], S.PENDING, [S.RETRY])
    store.claim(a[1]["id"], "gpu0", "i0")
    store.claim(a[2]["id"], "gpu1", "i1")
    store.claim(b[1]["id"], "cpu0", "i2")
    assert store.running_gpus_by_owner() == {"alice": 2}
    since = time.time() - 1
    assert store.transition(a[1]["id"], S.COMPLETE, [S.RUNNING], attempt=1)
    spans = store.gpu_spans(since)
    assert sorted(o for o, _s, _e in spans) == ["alice", "alice"]
    assert sum(1 for _o, _s, e in spans if e is None) == 1, "the running attempt counts, still open"
    assert store.gpu_spans(time.time() + 10) == [(o, s, e) for o, s, e in spans if e is None]
    counts = store.counts_by_owner()
    assert counts["alice"] == {"PENDING": 2, "RUNNING": 1, "COMPLETE": 1}
    assert counts["bob"] == {"PENDING": 1, "RUNNING": 1}
    assert store.delete(a[1]["id"])
    assert sorted(o for o, _s, _e in store.gpu_spans(since)) == ["alice", "alice"], \
        "a deleted task's GPU time still counts (deleting must not reset a user's fair share)"


def test_a_batch_is_stored_whole_or_not_at_all(store):
    """A batch the server answered with an error must leave no task behind, however the store splits
    its writes (Redis writes a big batch in chunks so other clients are answered in between)."""
    existing = new_task(name="older")
    store.create(existing)
    batch = [new_task(name="batch") for _ in range(1_200)]
    batch[1_100] = dict(batch[1_100], id=existing["id"])  # in a later chunk than the first
    with pytest.raises(Exception):
        store.create_many(batch)
    assert store.count() == 1 and [t["name"] for t in store.list()] == ["older"]
    assert store.get(existing["id"])["name"] == "older", "the task that was there is untouched"
    assert store.count(text="batch") == 0
    store.create_many(batch[:1_100])
    assert store.count([S.PENDING]) == 1_101
    assert [t["id"] for t in store.list(limit=2)] == [batch[1_099]["id"], batch[1_098]["id"]]


def test_sqlite_reads_answer_while_a_batch_holds_the_writer(tmp_path):
    """Issue 13: `GET stats` and task listings must not wait while a big batch's transaction holds the
    store's one writing connection. Reads use a connection per thread (WAL readers see the last commit
    and never wait for a writer); a read after the commit sees the batch, and close() closes them all."""
    import sqlite3

    store = SqliteTaskStore(str(tmp_path / "state.db"))
    first, late = new_task(), new_task()
    store.create(first)
    holding, release = threading.Event(), threading.Event()

    def batch():
        with store._lock:  # what create_many holds for a whole batch, its transaction open
            store._conn.execute("begin immediate")
            store.create(late)
            holding.set()
            release.wait(60)
            store._conn.execute("commit")

    answers = {}

    def read():
        answers.update(get=store.get(first["id"]), late=store.get(late["id"]), count=store.count(),
                       counts=store.counts_by_status(), listed=[t["id"] for t in store.list()],
                       waiting=store.waiting_by_pool(), statuses=store.statuses([first["id"], late["id"]]),
                       fingerprint=store.fingerprint(), workers=store.workers(), running=store.running())

    writer = threading.Thread(target=batch)
    writer.start()
    try:
        assert holding.wait(30)
        reader = threading.Thread(target=read)
        reader.start()
        reader.join(30)
        assert not reader.is_alive(), "the reads waited for the batch's transaction"
    finally:
        release.set()
        writer.join(30)
    assert answers["get"]["id"] == first["id"] and answers["late"] is None, "readers see the last commit only"
    assert answers["count"] == 1 and answers["counts"]["PENDING"] == 1 and answers["listed"] == [first["id"]]
    assert answers["waiting"] == {"cpu": 1} and answers["statuses"] == {first["id"]: "PENDING"}
    # once committed, every thread's reader sees the batch, and a write is seen by the next read at once
    assert store.get(late["id"])["id"] == late["id"] and store.count() == 2
    assert store.transition(first["id"], S.CANCELLED, [S.PENDING])
    assert store.get(first["id"])["status"] == "CANCELLED" and store.counts_by_status()["CANCELLED"] == 1
    reader = threading.Thread(target=read)
    reader.start()
    reader.join(30)
    assert answers["get"]["status"] == "CANCELLED" and answers["count"] == 2
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.get(first["id"])  # this thread's reader is closed with the store
    failed = []
    late_reader = threading.Thread(target=lambda: failed.append(pytest.raises(sqlite3.ProgrammingError,
                                                                              store.count)))
    late_reader.start()
    late_reader.join(30)
    assert failed, "a thread that never read before gets no new connection to a closed store"


def test_per_owner_counts_follow_every_write(store):
    """The queued-tasks quota (``count(WAITING, owner=...)``) and stats' tasks per user (``counts_by_owner``)
    stay exact through every kind of write: a batch, a failed batch undone, claims, a release, retries,
    cancels and deletes. On Redis they come from per-owner indexes: with every task's hash out of the way
    they answer the same (they never read the tasks)."""
    waiting = [S.PENDING, S.RETRY]
    mine = [new_task(pool="gpu", gpu=1, owner="alice") for _ in range(5)] + [new_task(gpu=0, owner=None)]
    store.create_many(mine)
    store.create(new_task(owner="bob"))
    broken = [new_task(owner="bob") for _ in range(3)]
    broken[2] = dict(broken[2], id=mine[0]["id"])  # exists: the batch is refused, its first two undone
    with pytest.raises(Exception):
        store.create_many(broken)
    task = store.claim(mine[0]["id"], "gpu0", "i0")
    assert store.transition(mine[0]["id"], S.RETRY, [S.RUNNING], attempt=task["attempt"], not_before=0)
    store.claim(mine[1]["id"], "gpu1", "i1")
    task = store.claim(mine[2]["id"], "gpu0", "i2")
    assert store.release(mine[2]["id"], task["attempt"])
    assert store.transition(mine[3]["id"], S.CANCELLED, [S.PENDING]) and store.delete(mine[3]["id"])
    assert store.transition(mine[4]["id"], S.CANCELLED, [S.PENDING])
    expected = {"alice": {"RETRY": 1, "RUNNING": 1, "PENDING": 1, "CANCELLED": 1}, "bob": {"PENDING": 1},
                None: {"PENDING": 1}}
    assert store.counts_by_owner() == expected
    assert store.count(waiting, owner="alice") == 2 and store.count(owner="alice") == 4
    assert store.count(waiting, owner="bob") == 1 and store.count(waiting, owner="carol") == 0
    assert [t["id"] for t in store.list(waiting, owner="alice")] == [mine[2]["id"], mine[0]["id"]]
    if isinstance(store, SqliteTaskStore):
        return
    hashes = [store._key("task", t["id"]) for t in mine if t is not mine[3]] + [store._key("task", "x")]
    hashes = [k for k in hashes if store.redis.exists(k)]
    for key in hashes:
        store.redis.rename(key, key + ":hidden")
    try:
        assert store.counts_by_owner() == expected and store.count(waiting, owner="alice") == 2
    finally:
        for key in hashes:
            store.redis.rename(key + ":hidden", key)


def test_an_older_redis_database_is_indexed_by_owner_once(redis_server, monkeypatch):
    """A Redis database written before the per-owner indexes: the first store that needs them indexes every
    task (a few thousand a step, so Redis answers others in between), then keeps them up to date."""
    from jupyter_taskq.backends import redis_store
    from jupyter_taskq.backends.redis_store import RedisTaskStore

    prefix = f"old-{uuid.uuid4().hex[:8]}:"
    old = RedisTaskStore(redis_server.url, prefix=prefix)
    old.create_many([new_task(owner=f"user{i % 3}") for i in range(10)])
    first = old.list(owner="user0")[0]["id"]
    assert old.transition(first, S.CANCELLED, [S.PENDING])
    keys = old.redis.keys(prefix + "owned:*") + [old._key("owners"), old._key("owners_indexed")]
    old.redis.delete(*keys)  # as written before them
    monkeypatch.setattr(redis_store, "INDEX_STEP", 3)
    store = RedisTaskStore(redis_server.url, prefix=prefix)
    assert store.counts_by_owner() == {"user0": {"PENDING": 3, "CANCELLED": 1}, "user1": {"PENDING": 3},
                                       "user2": {"PENDING": 3}}
    assert store.redis.get(store._key("owners_indexed")) == b"1"
    store.create(new_task(owner="user1"))
    assert old.count([S.PENDING], owner="user1") == 4, "another store (process) sees the same"
    old.close()
    store.close()


def test_an_older_redis_database_still_counts_the_gpu_time_used_before_the_upgrade(redis_server, monkeypatch):
    """Fair share reads GPU time from an index of GPU attempts; a database written before that index is
    indexed once, so a heavy user's earlier GPU time (and an attempt running through the upgrade) still
    counts, rather than every user starting from zero."""
    from jupyter_taskq.backends import redis_store
    from jupyter_taskq.backends.redis_store import RedisTaskStore

    prefix = f"old-{uuid.uuid4().hex[:8]}:"
    old = RedisTaskStore(redis_server.url, prefix=prefix)
    old.create_many([new_task(owner="heavy", gpu=1) for _ in range(2)] + [new_task(owner="light", gpu=0)])
    done, running = (t["id"] for t in old.list(owner="heavy"))
    for task_id in (done, running):
        assert old.claim(task_id, "gpu0", "i")
    assert old.transition(done, S.COMPLETE, [S.RUNNING], attempt=1)
    old.redis.delete(old._key("gpu_attempts"), old._key("gpu_attempts_indexed"))  # as written before it
    monkeypatch.setattr(redis_store, "INDEX_STEP", 2)
    store = RedisTaskStore(redis_server.url, prefix=prefix)
    spans = store.gpu_spans(0)
    assert sorted(owner for owner, _started, _ended in spans) == ["heavy", "heavy"]
    assert sorted(ended is None for _owner, _started, ended in spans) == [False, True], "one ended, one runs"
    assert store.transition(running, S.COMPLETE, [S.RUNNING], attempt=1)
    assert all(ended is not None for _owner, _started, ended in store.gpu_spans(0)), "its end is counted too"
    old.close()
    store.close()


# -- the rest of the backend contract -------------------------------------------------------------------------
def test_the_picker_takes_a_name_a_dotted_path_or_a_url():
    assert pick_backend().name == "sqlite" and pick_backend("", "redis://db.example:6379/0").name == "redis"
    assert pick_backend("", "rediss://db.example/0").name == "redis" and pick_backend("memory").name == "memory"
    assert pick_backend("jupyter_taskq.backends.memory.MemoryBackend").name == "memory"
    assert pick_backend("redis", "").name == "redis"  # a name wins over the URL's scheme
    for wrong in ("postgres", "jupyter_taskq.backends.memory.Nope", "jupyter_taskq.pools.POOLS"):
        with pytest.raises(ValueError):
            pick_backend(wrong)


def test_queues_keep_priority_order_and_are_shared_by_every_opener(opened):
    queue, other = opened.open_queue("cpu"), opened.open_queue("cpu")  # another process's view of the pool
    enqueue_attempts(queue, [AttemptSpec("low", 0, priority=1), AttemptSpec("high", 0, priority=5),
                             AttemptSpec("mid", 0, priority=3)])
    enqueue_attempt(queue, "later", retries=0, delay=3600)
    assert other.pending_count() == 3 and len(other.scheduled()) == 1
    assert [other.dequeue().args[0] for _ in range(3)] == ["high", "mid", "low"]
    assert other.dequeue() is None and opened.open_queue("gpu").dequeue() is None, "pools are apart"
    queues = opened.open_queues()
    assert {"cpu", "gpu"} <= set(queues) and queues["gpu:A100"].dequeue() is None  # a model's pool on demand
    with pytest.raises(ValueError):
        queues["no such pool"]


def _listening(bell):
    bell.wait(0)  # a listener listens from its first wait on (a FIFO drops rings nobody hears)
    return bell


def test_a_ring_wakes_one_listener_of_its_pool(opened):
    listener = _listening(opened.work_bell("cpu"))
    _listening(opened.work_bell("gpu"))
    assert not listener.wait(0.05), "nothing rung yet"
    opened.work_bell("cpu").ring()  # rung by another handle, as by another process
    assert listener.wait(5)
    assert not listener.wait(0.05), "one ring wakes one sleeper once"
    opened.work_bell("cpu").ring_times(2)
    assert listener.wait(5) and listener.wait(5)


def test_a_worker_sleeps_on_all_its_pools_bells_at_once(opened):
    bells = [_listening(opened.work_bell("cpu")), _listening(opened.work_bell("gpu:A100"))]
    started = time.monotonic()
    assert not opened.wait_for_any(bells, 0.2) and time.monotonic() - started >= 0.15
    opened.work_bell("gpu:A100").ring()
    assert opened.wait_for_any(bells, 5)
    assert not opened.wait_for_any(bells, 0.05)


def test_every_ring_of_the_events_reaches_the_servers_listener(opened):
    listener = opened.events_listener()
    listener.read_all()
    opened.events_ringer().ring(b"task-1\n")
    opened.events_ringer().ring(b"task-2\n")
    heard, deadline = b"", time.monotonic() + 10
    while not {b"task-1", b"task-2"} <= set(heard.split(b"\n")) and time.monotonic() < deadline:
        select.select([listener.fileno()], [], [], 0.5)  # what the server's event loop waits on
        heard += listener.read_all()
    assert {b"task-1", b"task-2"} <= set(heard.split(b"\n"))


def test_a_child_opens_the_same_backend_or_is_refused_clearly(opened):
    if opened.name == "memory":
        for ask in (opened.child_args, opened.child_env):
            with pytest.raises(BackendError, match="inside this process"):
                ask()
        return
    args, env = opened.child_args(), opened.child_env()
    flags = dict(zip(args[::2], args[1::2]))
    # What `jupyter taskq worker` does with them: --redis defaults to $JUPYTER_TASKQ_REDIS_URL.
    child = open_child_backend(flags["--state-dir"], env.get("JUPYTER_TASKQ_REDIS_URL", ""), flags.get("--files-dir"),
                               env=env, prefix=opened.prefix)
    assert type(child) is type(opened)
    task = new_task()
    opened.open_store().create(task)
    assert child.open_store().get(task["id"])["status"] == "PENDING"


def test_health_check_and_secrets(opened):
    assert opened.check() == [], "a fresh backend (the test Redis keeps AOF) starts without a warning"
    secrets = opened.secrets()
    if opened.name == "redis":
        assert opened.url in secrets
    if opened.name != "memory":
        assert set(secrets) <= set(environment_secrets(opened.child_env())), "a child's payloads are checked for them"
    assert opened.shared == bool(opened.host())


def test_schedule_records_are_compare_and_set(opened):
    records, other = opened.schedule_records(), opened.schedule_records()  # two servers of one queue
    records.add("s1", '{"v": 1}')
    assert other.get("s1") == '{"v": 1}' and other.all() == {"s1": '{"v": 1}'} and other.get("s2") is None
    assert other.swap("s1", '{"v": 1}', '{"v": 2}')
    assert not records.swap("s1", '{"v": 1}', '{"v": 3}'), "the record changed under it: the swap loses"
    assert records.get("s1") == '{"v": 2}'
    assert records.remove("s1") and not other.remove("s1") and records.all() == {}


def test_the_memory_backend_serves_a_task_service_in_process(tmp_path):
    """What the memory backend is for: the domain service in a test, with no file database, no Redis and no
    worker process. A submitted task is stored, queued on its pool and rings that pool's bell."""
    from jupyter_taskq.payload import dumps_call
    from jupyter_taskq.server.service import TaskService

    backend = open_backend("memory", state_dir=tmp_path / "state")
    idle_worker = _listening(backend.work_bell("cpu"))
    service = TaskService(backend.state, backend.open_store(), backend.open_queues(), gpus=[], workers_per_gpu=1,
                          cpu_workers=1, max_retries=0, retry_delay=0, retry_backoff=1, result_ttl=3600,
                          work_bells=backend.work_bells(), objects=backend.objects)
    task = service.submit(service.spool_bytes(dumps_call(divmod, (7, 2))), service.validate_options({}))
    assert idle_worker.wait(5), "the pool's idle worker is woken"
    assert backend.open_store().get(task["id"])["status"] == "PENDING"
    assert backend.open_queue("cpu").dequeue().args[0] == task["id"]
