"""Fair share and quotas (issue 15): the pure policy, and the turn-taking a GPU worker does with it on a
real SQLite store and Huey queue (no server: what a worker would run, step by step)."""

from __future__ import annotations

import time
import uuid

import pytest

from jupyter_taskq.fairshare import Head, decayed_gpu_seconds, pick_next, usage_from_spans
from conftest import wait_for
from jupyter_taskq.backends.hueyqueue import AttemptSpec, enqueue_attempts, open_queue, open_redis_queue
from jupyter_taskq.quotas import PolicyFile, QuotaExceeded, Quotas, usage_by_owner, write_policy
from jupyter_taskq.recovery import requeue_attempt, retry_or_fail
from jupyter_taskq.statedir import StateDir
from jupyter_taskq.status import TaskStatus as S
from jupyter_taskq.backends.sqlite_store import SqliteTaskStore
from jupyter_taskq.worker.fair import FairTurns

HOUR = 3600.0
BACKENDS = ["sqlite", "redis"]  # the real-worker test runs on both queues (conftest's make_server)


def test_gpu_time_decays_with_its_half_life():
    now = 100_000.0
    assert decayed_gpu_seconds([(now - 10, now)], now) == pytest.approx(10, rel=1e-3), "recent time counts fully"
    hour_ago = decayed_gpu_seconds([(now - HOUR - 10, now - HOUR)], now)
    assert hour_ago == pytest.approx(5, rel=1e-3), "an hour ago counts half"
    assert decayed_gpu_seconds([(now - 5, None)], now) == pytest.approx(5, rel=1e-3), "a running task counts"
    assert decayed_gpu_seconds([(now, now - 1)], now) == 0


def test_the_least_recent_gpu_time_goes_first_priorities_only_within_a_user():
    heads = [Head("alice", "a1", seq=1), Head("bob", "b1", seq=2), Head("carol", "c1", seq=3)]
    usage = {"alice": 100.0, "bob": 5.0}
    assert pick_next(heads, usage).owner == "carol", "no GPU time at all: first"
    assert pick_next(heads[:2], usage).owner == "bob"
    assert pick_next(heads[:2], {}).task_id == "a1", "equal usage: the older task (first come, first served)"
    assert pick_next(heads, usage, at_cap=lambda o: o in ("carol", "bob")).owner == "alice", "at quota: passed over"
    assert pick_next(heads, usage, at_cap=lambda o: True) is None, "everyone at quota: nothing runs"
    spans = [("alice", 0.0, 50.0), ("alice", 60.0, None), ("bob", 90.0, 95.0)]
    assert usage_from_spans(spans, 100.0, HOUR) == {
        "alice": pytest.approx(90, rel=1e-2), "bob": pytest.approx(5, rel=1e-2)}


def test_quota_limits_overrides_and_the_queued_cap():
    quotas = Quotas(max_gpus=2, max_queued=10, overrides={
        "user:ada": {"max_gpus": 8}, "group:students": {"max_gpus": 1, "max_queued": 3},
        "group:staff": {"max_gpus": 4}})
    assert quotas.limit("max_gpus", "bob") == 2
    assert quotas.limit("max_gpus", "ada", ["students"]) == 8, "a user's own override wins"
    assert quotas.limit("max_gpus", "eve", ["students", "staff"]) == 4, "the most generous group"
    assert quotas.limit("max_queued", "eve", ["students", "staff"]) == 3
    assert Quotas.from_json(quotas.to_json()) == quotas


@pytest.fixture(params=["sqlite", "redis"])
def queue_world(request, tmp_path):
    """A GPU pool's real store and Huey queue: the SQLite file, or a real redis-server."""
    state = StateDir.create(tmp_path / "state")
    if request.param == "sqlite":
        store = SqliteTaskStore(str(state.db))
        huey = open_queue(state, "gpu")
    else:
        from jupyter_taskq.backends.redis_store import RedisTaskStore

        prefix = f"fair-{uuid.uuid4().hex[:8]}:"
        url = request.getfixturevalue("redis_server").url
        store, huey = RedisTaskStore(url, prefix=prefix), open_redis_queue(url, "gpu", prefix)
    yield state, store, huey
    store.close()


def submit(store, huey, owner, n, priority=0, retries=0, retry_delay=0.0):
    now = time.time()
    tasks = [{"id": uuid.uuid4().hex, "name": f"{owner}{i}", "status": S.PENDING, "pool": "gpu", "gpu": 1,
              "owner": owner, "priority": priority, "created_at": now, "updated_at": now, "max_retries": retries,
              "retry_delay": retry_delay} for i in range(n)]
    store.create_many(tasks)
    enqueue_attempts(huey, [AttemptSpec(t["id"], retries=retries, retry_delay=retry_delay, priority=priority)
                            for t in tasks])
    return [t["id"] for t in tasks]


def take_turn(turns, store, huey, worker):
    """What a GPU worker does when it frees up: its next message, given to a user by fair share, then claimed."""
    while (message := huey.dequeue()) is not None:
        chosen = turns.choose(huey, message, "gpu")
        if chosen is None:
            return None
        claimed = store.claim(chosen.args[0], worker, worker)
        if claimed:
            return claimed
    return None


def finish(store, task, seconds):
    """End a running attempt as if it had held its GPU for ``seconds``."""
    store.transition(task["id"], S.COMPLETE, [S.RUNNING], attempt=task["attempt"])
    backdate(store, task, seconds)


def fail(store, huey, task, seconds=1.0):
    """What a worker does when an attempt raises: RETRY (or FAILED once retries are spent) and, for a retry,
    its next attempt queued after its retry_delay (on Huey's schedule)."""
    status = retry_or_fail(store, task, {"type": "RuntimeError", "message": "boom", "traceback": None})
    backdate(store, task, seconds)
    if status is S.RETRY:
        requeue_attempt(huey, task)
    return status


def backdate(store, task, seconds):
    """The ended attempt started ``seconds`` before it ended (its GPU time, for fair share)."""
    if isinstance(store, SqliteTaskStore):
        store._write("update taskq_attempts set started_at = ended_at - ? where task_id = ? and attempt = ?",
                     (seconds, task["id"], task["attempt"]))
        return
    import json

    key = store._key("attempts", task["id"])
    entry = json.loads(store.redis.hget(key, str(task["attempt"])))
    entry["started_at"] = entry["ended_at"] - seconds
    store.redis.hset(key, str(task["attempt"]), json.dumps(entry))


def move_due_retries(huey):
    """What an idle worker does twice a second: delayed retries whose time has come onto the queue."""
    for message in huey.read_schedule():
        huey.enqueue(message)


def nothing_waits(store, huey):
    """Every task ran or ended; no message is left over (a stale one was dropped when it came up)."""
    return store.count([S.PENDING, S.RETRY, S.RUNNING]) == 0 and huey.pending_count() == 0 \
        and huey.scheduled_count() == 0


def test_a_freed_gpu_goes_to_the_user_with_the_least_gpu_time(queue_world):
    state, store, huey = queue_world
    turns = FairTurns(store, state.root)
    alice = submit(store, huey, "alice", 20)
    assert turns.choose(huey, huey.dequeue(), "gpu").args[0] == alice[0], "no policy file: plain order"
    huey.enqueue(huey.attempt.s(alice[0]))
    write_policy(state.root, Quotas())
    ran = []
    first = take_turn(turns, store, huey, "gpu0")
    finish(store, first, 300)  # alice has had the GPU for five minutes
    ran.append(first["owner"])
    bob = submit(store, huey, "bob", 2)  # queued behind alice's 19
    for _ in range(5):
        task = take_turn(turns, store, huey, "gpu0")
        finish(store, task, 60)
        ran.append(task["owner"])
    assert ran == ["alice", "bob", "bob", "alice", "alice", "alice"], "both of bob's before alice's next"
    assert store.get(bob[0])["status"] == "COMPLETE" and store.get(alice[1])["status"] == "COMPLETE"
    rest = [take_turn(turns, store, huey, "gpu0") for _ in range(16)]
    assert [t["id"] for t in rest] == alice[4:], "alice's own order kept; every task ran once"
    assert take_turn(turns, store, huey, "gpu0") is None and huey.pending_count() == 0


def test_priorities_order_a_users_own_tasks_only(queue_world):
    state, store, huey = queue_world
    write_policy(state.root, Quotas())
    turns = FairTurns(store, state.root)
    low = submit(store, huey, "bob", 1, priority=0)
    urgent = submit(store, huey, "alice", 1, priority=100)
    important = submit(store, huey, "bob", 1, priority=5)
    got = []
    for _ in range(3):
        task = take_turn(turns, store, huey, "gpu0")
        finish(store, task, 1)
        got.append(task["id"])
    assert got == [urgent[0], important[0], low[0]], \
        "bob's priority-5 task before his older one; alice's priority 100 buys her no turn ahead of bob's"


def test_a_user_at_the_gpu_quota_waits_while_others_run(queue_world):
    state, store, huey = queue_world
    write_policy(state.root, Quotas(max_gpus=1, overrides={"user:bob": {"max_gpus": 2}}))
    turns = FairTurns(store, state.root)
    alice = submit(store, huey, "alice", 3)
    running = take_turn(turns, store, huey, "gpu0")
    assert running["id"] == alice[0]
    assert take_turn(turns, store, huey, "gpu1") is None, "alice holds her one GPU: the second stays idle"
    assert store.get(alice[1])["status"] == "PENDING" and huey.pending_count() == 2, "her tasks keep their turns"
    bob = submit(store, huey, "bob", 3)
    assert take_turn(turns, store, huey, "gpu1")["owner"] == "bob"
    assert take_turn(turns, store, huey, "gpu2")["owner"] == "bob", "bob's override: two GPUs"
    assert take_turn(turns, store, huey, "gpu3") is None
    finish(store, running, 10)
    assert take_turn(turns, store, huey, "gpu0")["id"] == alice[1], "a freed quota lets alice's next run"
    assert {store.get(i)["status"] for i in bob} == {"RUNNING", "PENDING"}


def test_usage_per_user_today_and_this_week(queue_world):
    _state, store, huey = queue_world
    submit(store, huey, "alice", 2)
    task = store.claim(store.list(owner="alice")[0]["id"], "gpu0", "i")
    finish(store, task, 120)
    usage = usage_by_owner(store)
    assert usage["alice"]["gpu_seconds_today"] == pytest.approx(120, abs=1)
    assert usage["alice"]["gpu_seconds_week"] == pytest.approx(120, abs=1)
    assert usage["alice"]["tasks"] == {"COMPLETE": 1, "PENDING": 1}
    with pytest.raises(QuotaExceeded, match="max_queued_tasks"):
        Quotas(max_queued=1).check_queued("alice", (), store, adding=1)
    Quotas(max_queued=2).check_queued("alice", (), store, adding=1)


def test_the_policy_file_is_reread_when_it_changes(tmp_path):
    policy = PolicyFile(tmp_path)
    assert policy.current() is None
    write_policy(tmp_path, Quotas(max_gpus=1), {"ada": ["staff"]})
    quotas, groups = policy.current()
    assert quotas.max_gpus == 1 and groups == {"ada": ["staff"]}


def test_a_retry_waits_while_its_owner_is_at_the_gpu_cap(queue_world):
    """A task that failed and waits for its retry is one of its owner's waiting tasks: it does not take
    a second GPU while its owner holds their max_gpus, however its message comes up."""
    state, store, huey = queue_world
    write_policy(state.root, Quotas(max_gpus=1))
    turns = FairTurns(store, state.root)
    flaky, steady = submit(store, huey, "alice", 2, retries=1)
    first = take_turn(turns, store, huey, "gpu0")
    assert first["id"] == flaky and take_turn(turns, store, huey, "gpu1") is None, "alice holds her one GPU"
    assert fail(store, huey, first) is S.RETRY
    again = take_turn(turns, store, huey, "gpu0")
    assert again["id"] == flaky, "her retry first: among her own tasks it keeps its place (the older)"
    assert take_turn(turns, store, huey, "gpu1") is None, "her other task's message is only a turn"
    assert store.running_gpus_by_owner() == {"alice": 1} and store.get(steady)["status"] == "PENDING"
    assert fail(store, huey, again) is S.FAILED, "retries spent"
    last = take_turn(turns, store, huey, "gpu1")
    assert last["id"] == steady, "her other task runs once her GPU is free"
    assert take_turn(turns, store, huey, "gpu0") is None, "the retry's message finds its task done: dropped"
    finish(store, last, 5)
    assert take_turn(turns, store, huey, "gpu0") is None
    assert nothing_waits(store, huey)
    assert store.get(flaky)["attempt"] == 2 and store.get(steady)["attempt"] == 1, "each attempt ran once"


def fail_first_attempt(marker):
    """Raise on the first attempt, return on the next (the marker file remembers)."""
    import os

    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    return "second attempt"


def hold_gpu_until(gate):
    import os
    import time

    while not os.path.exists(gate):
        time.sleep(0.01)
    return os.environ["CUDA_VISIBLE_DEVICES"]


def test_real_workers_keep_a_retry_to_the_gpu_cap_and_its_delay(make_server, tmp_path):
    """Two GPU workers (gpus=[0, 1]) under a policy of one GPU per user: a task that fails waits out its
    retry_delay and then waits while its owner's other task holds their GPU, though the second GPU is free."""
    server = make_server(gpus=[0, 1], cpu_workers=0)
    client = server.client()
    write_policy(server.state_dir, Quotas(max_gpus=1))
    gate = tmp_path / "gate"
    flaky = client.submit(fail_first_attempt, (str(tmp_path / "marker"),), gpu=1, max_retries=1, retry_delay=1)
    wait_for(lambda: client.get(flaky.id)["status"] == "RETRY", 30, 0.05, "the first attempt to fail")
    holder = client.submit(hold_gpu_until, (str(gate),), gpu=1)
    wait_for(lambda: client.get(holder.id)["status"] == "RUNNING", 30, 0.05, "the other task to take the GPU")
    retry_at = seconds(client.attempts(flaky.id)[0]["ended_at"]) + 1
    wait_for(lambda: time.time() > retry_at + 1.5, 10, 0.05, "the retry's delay to be over")
    assert client.get(flaky.id)["status"] == "RETRY", "its owner holds their one GPU: the retry waits"
    assert [w["current_task"] for w in client.stats()["workers"] if w["current_task"]] == [holder.id]
    gate.touch()
    assert flaky.result(timeout=30) == "second attempt" and holder.result(timeout=30) in ("0", "1")
    first, second = (client.attempts(flaky.id)[i] for i in (0, 1))
    assert seconds(second["started_at"]) >= seconds(first["ended_at"]) + 0.99, "its retry_delay was honoured"
    assert seconds(second["started_at"]) >= seconds(client.get(holder.id)["ended_at"]) - 0.01, "one GPU at a time"


def seconds(iso: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_heavy_users_retry_does_not_jump_ahead_of_a_light_users_tasks(queue_world):
    state, store, huey = queue_world
    write_policy(state.root, Quotas())
    turns = FairTurns(store, state.root)
    alice = submit(store, huey, "alice", 2, retries=1)
    first = take_turn(turns, store, huey, "gpu0")
    assert first["id"] == alice[0]
    assert fail(store, huey, first, seconds=300) is S.RETRY  # five minutes of GPU, then a retry right away
    bob = submit(store, huey, "bob", 2)  # queued after alice's retry
    ran = []
    for _ in range(4):
        task = take_turn(turns, store, huey, "gpu0")
        finish(store, task, 60)
        ran.append(task["id"])
    assert ran[:2] == bob, "bob has had no GPU time: both of his before alice's retry"
    assert ran[2:] == alice, "then alice's, her retry first (her older task)"
    assert take_turn(turns, store, huey, "gpu0") is None and nothing_waits(store, huey)


def test_a_retry_runs_after_its_delay_never_on_a_stale_message(queue_world):
    """A task chosen by another user's turn leaves its own message behind; when it then fails and waits
    for a delayed retry, that message is a turn like any other: it neither starts the retry before its
    retry_delay is over nor runs it twice, and the task is never left without a message."""
    state, store, huey = queue_world
    write_policy(state.root, Quotas())
    turns = FairTurns(store, state.root)
    submit(store, huey, "bob", 1)
    finish(store, take_turn(turns, store, huey, "gpu0"), 300)  # bob has had the GPU for five minutes
    later = submit(store, huey, "bob", 1)[0]
    flaky = submit(store, huey, "alice", 1, retries=1, retry_delay=4)[0]  # room for a loaded machine's steps below
    task = take_turn(turns, store, huey, "gpu0")
    assert task["id"] == flaky, "alice first (no GPU time), by bob's turn: her own message stays queued"
    assert fail(store, huey, task) is S.RETRY
    not_before = store.get(flaky)["not_before"]
    assert not_before == pytest.approx(time.time() + 4, abs=1)
    task = take_turn(turns, store, huey, "gpu0")
    assert task["id"] == later, "alice's old message came up first, but her retry is still in its delay"
    finish(store, task, 1)
    assert take_turn(turns, store, huey, "gpu0") is None, "only a retry in its delay waits: the GPU stays idle"
    assert store.get(flaky)["status"] == "RETRY" and huey.pending_count() + huey.scheduled_count() >= 1

    def retried():
        move_due_retries(huey)
        return take_turn(turns, store, huey, "gpu0")

    task = wait_for(retried, 20, 0.05, "the retry after its delay")
    assert task["id"] == flaky and task["attempt"] == 2 and task["started_at"] >= not_before
    finish(store, task, 1)
    move_due_retries(huey)
    assert take_turn(turns, store, huey, "gpu0") is None, "the retry's own message finds it done: dropped"
    assert nothing_waits(store, huey) and store.get(flaky)["attempt"] == 2


def test_a_retry_in_its_delay_is_no_ones_next_task(queue_world):
    """The store's per-owner question (indexed on Redis): a retry counts among its owner's waiting tasks
    once its delay is over, and a task that stops waiting leaves the answer at once."""
    state, store, huey = queue_world
    low = submit(store, huey, "alice", 1, retries=1)[0]
    high = submit(store, huey, "alice", 1, priority=5, retries=1)[0]
    bob = submit(store, huey, "bob", 1)[0]

    def heads(now=None):
        return {h["owner"]: (h["id"], h["priority"]) for h in store.waiting_heads(["gpu"], now=now)}

    assert heads() == {"alice": (high, 5), "bob": (bob, 0)}
    task = store.claim(high, "gpu0", "i")
    assert heads() == {"alice": (low, 0), "bob": (bob, 0)}, "running: not waiting"
    now = time.time()
    store.transition(high, S.RETRY, [S.RUNNING], attempt=task["attempt"], not_before=now + 60)
    assert heads(now) == {"alice": (low, 0), "bob": (bob, 0)}, "in its retry delay"
    assert heads(now + 61) == {"alice": (high, 5), "bob": (bob, 0)}, "its delay over: first again (priority 5)"
    store.transition(bob, S.CANCELLED, [S.PENDING])
    store.transition(low, S.CANCELLED, [S.PENDING])
    assert heads(now + 61) == {"alice": (high, 5)}, "bob has nothing waiting: no head"
    if not isinstance(store, SqliteTaskStore):  # a Redis database from before the per-owner sets: indexed once
        from jupyter_taskq.backends.redis_store import RedisTaskStore

        keys = [k for pattern in ("heads:*", "head_owners:*") for k in store.redis.keys(store.prefix + pattern)]
        store.redis.delete(*keys, store._key("retry_due"), store._key("heads_indexed"))
        fresh = RedisTaskStore(store.url, prefix=store.prefix)
        assert fresh.waiting_heads(["gpu"], now=now) == [], "its delay kept"
        assert [h["id"] for h in fresh.waiting_heads(["gpu"], now=now + 61)] == [high]
        fresh.close()
    assert store.transition(high, S.CANCELLED, [S.RETRY]) and store.delete(high)
    assert heads(now + 61) == {}


def test_a_retry_stored_before_not_before_existed_still_waits_out_its_delay(queue_world):
    """A task that went into RETRY under a version without ``not_before`` (no such field, or NULL): once the
    store is opened again it waits out its retry_delay (with backoff), counted from when it went into
    RETRY, and then is its owner's next task; fair share never starts it at once."""
    state, store, huey = queue_world
    now = time.time()
    fresh, older = (submit(store, huey, "alice", 1, retries=3, retry_delay=60)[0] for _ in range(2))
    for task_id, attempt in ((fresh, 1), (older, 2)):  # older: its second attempt failed (backoff 2: 120 s)
        store.update_fields(task_id, status=S.RETRY, attempt=attempt, retry_backoff=2, updated_at=now - 10,
                            not_before=None)
    if isinstance(store, SqliteTaskStore):
        reopened = SqliteTaskStore(str(state.db))
    else:
        from jupyter_taskq.backends.redis_store import RedisTaskStore

        store.redis.hdel(store._key("task", fresh), "not_before")  # never written at all
        reopened = RedisTaskStore(store.url, prefix=store.prefix)

    def heads(at):
        return [h["id"] for h in reopened.waiting_heads(["gpu"], now=at)]

    assert heads(now) == [], "both still in their delay"
    assert reopened.get(fresh)["not_before"] == pytest.approx(now + 50)
    assert reopened.get(older)["not_before"] == pytest.approx(now + 110)
    assert heads(now + 51) == [fresh], "its delay over: her next task (the older one still waits)"
    assert reopened.claim(fresh, "gpu0", "i")["attempt"] == 2
    assert heads(now + 51) == [] and heads(now + 111) == [older]
    reopened.close()
