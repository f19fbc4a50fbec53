"""Fair share on Redis: what one GPU worker's turn costs with many tasks waiting (issue 15).

    python bench/bench_fairshare.py [--waiting 20000] [--owners 20] [--running 8] [--reps 50]

Each time a GPU frees up under fair share, the worker asks the store three questions
(:class:`jupyter_taskq.worker.fair.FairTurns`): each owner's next waiting task (``waiting_heads``),
the GPUs each owner holds (``running_gpus_by_owner``) and the recent GPU time (``gpu_spans``). This
starts its own ``redis-server`` on 127.0.0.1, fills it with ``--waiting`` PENDING GPU tasks across
``--owners`` users, a few delayed and due retries, ``--running`` running tasks and a day of finished
GPU attempts, then times each question: the Redis store's indexed answer, and the generic answer over
``list()`` that it replaced (the TaskStore defaults, kept for other stores). Median and p99 in ms.

Two per-user questions the hub service asks are timed the same way: the queued-tasks quota at each
submission (``count(WAITING, owner=...)``, against the read of every waiting task's owner it replaced)
and stats' tasks per user (``counts_by_owner``, against the generic answer over ``list()``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import json  # noqa: E402

from jupyter_taskq.status import WAITING, TaskStatus as S  # noqa: E402
from jupyter_taskq.backends.taskstore import TaskStore  # noqa: E402
from jupyter_taskq.backends.redis_store import RedisTaskStore  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(root: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    import redis

    client, deadline = redis.Redis(port=port), time.monotonic() + 20
    while True:
        try:
            client.ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.05)


def fill(store: RedisTaskStore, waiting: int, owners: int, running: int) -> None:
    now = time.time()

    def task(i, **fields):
        return {"id": uuid.uuid4().hex, "name": f"t{i}", "status": S.PENDING, "pool": "gpu", "gpu": 1,
                "owner": f"user{i % owners}", "priority": i % 3, "created_at": now, "updated_at": now,
                "max_retries": 1, **fields}

    store.create_many([task(i) for i in range(waiting)])
    finished = [task(i) for i in range(owners * 10)]  # a day of finished GPU attempts: 10 per owner
    store.create_many(finished)
    for t in finished:
        claimed = store.claim(t["id"], "gpu0", "bench")
        store.transition(t["id"], S.COMPLETE, [S.RUNNING], attempt=claimed["attempt"])
    retries = [task(i) for i in range(owners)]  # one failed attempt each: half still in their delay
    store.create_many(retries)
    for i, t in enumerate(retries):
        claimed = store.claim(t["id"], "gpu0", "bench")
        store.transition(t["id"], S.RETRY, [S.RUNNING], attempt=claimed["attempt"],
                         not_before=now + (3600 if i % 2 else -1))
    holders = [task(i) for i in range(running)]
    store.create_many(holders)
    for i, t in enumerate(holders):
        store.claim(t["id"], f"gpu{i}", "bench")


def count_by_reading_owners(store: RedisTaskStore, owner: str) -> int:
    """How ``count(WAITING, owner=...)`` was answered before the per-owner indexes: every waiting task's owner."""
    members = [m for s in WAITING for m in store.redis.zrange(store._key("status", s.value), 0, -1)]
    pipe = store.redis.pipeline(transaction=False)
    for member in members:
        pipe.hget(store._key("task", member.decode()), "owner")
    mine = json.dumps(owner).encode()
    return sum(1 for raw in pipe.execute() if raw == mine)


def timed(fn, reps: int) -> tuple[float, float]:
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, default=20_000)
    parser.add_argument("--owners", type=int, default=20)
    parser.add_argument("--running", type=int, default=8)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--generic-reps", type=int, default=5, help="reps of the slow generic answers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_redis(Path(tmp))
        try:
            store = RedisTaskStore(url, prefix="bench:")
            start = time.perf_counter()
            fill(store, args.waiting, args.owners, args.running)
            print(f"filled: {args.waiting} waiting GPU tasks, {args.owners} owners, {args.running} running "
                  f"({time.perf_counter() - start:.1f} s)")
            heads = store.waiting_heads(["gpu"])
            generic = TaskStore.waiting_heads(store, ["gpu"])
            assert sorted(h["id"] for h in heads) == sorted(h["id"] for h in generic), "same answer both ways"
            assert store.running_gpus_by_owner() == TaskStore.running_gpus_by_owner(store)
            since = time.time() - 36_000
            assert sorted(store.gpu_spans(since)) == sorted(TaskStore.gpu_spans(store, since))
            assert store.count(WAITING, owner="user1") == count_by_reading_owners(store, "user1")
            assert store.counts_by_owner() == TaskStore.counts_by_owner(store)
            rows = [
                ("waiting_heads", lambda: store.waiting_heads(["gpu"]),
                 lambda: TaskStore.waiting_heads(store, ["gpu"])),
                ("running_gpus_by_owner", store.running_gpus_by_owner, lambda: TaskStore.running_gpus_by_owner(store)),
                ("gpu_spans", lambda: store.gpu_spans(since), lambda: TaskStore.gpu_spans(store, since)),
                ("count(WAITING, owner)", lambda: store.count(WAITING, owner="user1"),
                 lambda: count_by_reading_owners(store, "user1")),
                ("counts_by_owner", store.counts_by_owner, lambda: TaskStore.counts_by_owner(store)),
            ]
            print(f"{'question':24} {'indexed p50':>12} {'p99':>8}   {'generic p50':>12} {'p99':>8}  (ms)")
            for name, indexed, plain in rows:
                fast = timed(indexed, args.reps)
                slow = timed(plain, args.generic_reps)
                print(f"{name:24} {fast[0]:12.2f} {fast[1]:8.2f}   {slow[0]:12.1f} {slow[1]:8.1f}")
            # A database from before the per-owner indexes: indexed once, by the first store that needs them.
            store.redis.delete(*store.redis.keys("bench:owned:*"), "bench:owners", "bench:owners_indexed")
            older, expected = RedisTaskStore(url, prefix="bench:"), TaskStore.counts_by_owner(store)
            start = time.perf_counter()
            assert older.counts_by_owner() == expected
            print(f"indexing an older database of {store.count()} tasks by owner, once: "
                  f"{(time.perf_counter() - start) * 1000:.0f} ms")
            older.close()
            store.close()
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
