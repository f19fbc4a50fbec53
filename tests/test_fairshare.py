"""Fair share and quotas (issue 15): the pure policy, and the turn-taking a GPU worker does with it on a
real SQLite store and Huey queue (no server: what a worker would run, step by step)."""

from __future__ import annotations

import time
import uuid

import pytest

from jupyter_taskq.fairshare import Head, decayed_gpu_seconds, pick_next, usage_from_spans
from jupyter_taskq.queue import AttemptSpec, enqueue_attempts, open_queue
from jupyter_taskq.quotas import PolicyFile, QuotaExceeded, Quotas, usage_by_owner, write_policy
from jupyter_taskq.statedir import StateDir
from jupyter_taskq.status import TaskStatus as S
from jupyter_taskq.store import SqliteTaskStore
from jupyter_taskq.worker.fair import FairTurns

HOUR = 3600.0


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


@pytest.fixture
def queue_world(tmp_path):
    state = StateDir.create(tmp_path / "state")
    store = SqliteTaskStore(str(state.db))
    huey = open_queue(state, "gpu")
    yield state, store, huey
    store.close()


def submit(store, huey, owner, n, priority=0):
    now = time.time()
    tasks = [{"id": uuid.uuid4().hex, "name": f"{owner}{i}", "status": S.PENDING, "pool": "gpu", "gpu": 1,
              "owner": owner, "priority": priority, "created_at": now, "updated_at": now, "max_retries": 0}
             for i in range(n)]
    store.create_many(tasks)
    enqueue_attempts(huey, [AttemptSpec(t["id"], retries=0, priority=priority) for t in tasks])
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
    store._write("update taskq_attempts set started_at = ended_at - ? where task_id = ?", (seconds, task["id"]))


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
