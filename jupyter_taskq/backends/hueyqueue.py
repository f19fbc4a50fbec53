"""The Huey side of the queue: one Huey queue per pool, in SQLite, Redis or memory.

Huey registers tasks by module path, so a notebook's function cannot be a Huey
task. Instead every pool has one registered Huey task, ``attempt(task_id)``, and
the payload lives in the state directory. Huey gives us the durable queue,
priorities, ``expires``, and retries with delay and backoff (through its
schedule); our store keeps what users see. The server only enqueues; a worker takes
the messages itself and hands each to an ``Attempt`` (``worker/process.py``): Huey's
executor never runs the registered function, which exists to name the messages.

Each backend's Huey storage has one method of ours, ``enqueue_many``: a batch's first
attempts in one write (one SQLite transaction), so nothing outside a storage class
writes Huey's tables.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Protocol

from huey import MemoryHuey, PriorityRedisHuey, SqliteHuey
from huey.storage import MemoryStorage, PriorityRedisStorage, SqliteStorage

from ..pools import check_pool
from ..statedir import StateDir

def _run_attempt(task_id: str, task=None):
    """The registered task's body: never run (a worker takes the message and runs the attempt itself)."""
    raise RuntimeError(f"attempt {task_id} reached Huey's executor: only jupyter-taskq workers take these "
                       "messages (jupyter taskq worker)")


class _Enqueues(Protocol):
    def enqueue(self, data: bytes, priority: int | None = None) -> None: ...


class _OneByOne:
    """``enqueue_many`` as a loop of ``enqueue``: for storages whose writes are one command each."""

    def enqueue_many(self: _Enqueues, items: list[tuple[bytes, int]]) -> None:
        for data, priority in items:
            self.enqueue(data, priority)


class _SqliteStorage(SqliteStorage):
    """Huey's SQLite storage with WAL and ``synchronous=NORMAL``: durable across process
    kills, without an fsync per commit."""

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("pragma synchronous=NORMAL")
        return conn

    def enqueue_many(self, items: list[tuple[bytes, int]]) -> None:
        """Many messages in one transaction: a batch of 2,000 costs one commit, not 2,000."""
        rows = [(self.name, data, priority or 0) for data, priority in items]
        with self.db(commit=True) as cursor:
            cursor.executemany("insert into task (queue, data, priority) values (?, ?, ?)", rows)


class _RedisStorage(_OneByOne, PriorityRedisStorage):
    pass


class _MemoryStorage(_OneByOne, MemoryStorage):
    pass


class _SqliteHuey(SqliteHuey):
    storage_class = _SqliteStorage


class _RedisHuey(PriorityRedisHuey):
    storage_class = _RedisStorage


class _MemoryHuey(MemoryHuey):
    storage_class = _MemoryStorage


def _with_attempt_task(huey):
    huey.attempt = huey.task(name="attempt", context=True)(_run_attempt)
    return huey


def open_queue(state: StateDir, pool: str) -> SqliteHuey:
    """The pool's queue in the state directory's SQLite file."""
    check_pool(pool)
    return _with_attempt_task(_SqliteHuey(name=pool, filename=str(state.db), results=False, timeout=60,
                                          journal_mode="wal"))


def open_redis_queue(url: str, pool: str, prefix: str = "jtq:") -> PriorityRedisHuey:
    """The pool's queue in Redis: a sorted set, so priorities hold across machines. Dequeuing
    does not block: a worker serving several pools sleeps on their bells instead."""
    check_pool(pool)
    return _with_attempt_task(_RedisHuey(name=f"{prefix}{pool}", url=url, results=False, blocking=False,
                                         clean_name=False))


def open_memory_queue(pool: str) -> MemoryHuey:
    """The pool's queue in this process's memory (the memory backend keeps one per pool)."""
    check_pool(pool)
    return _with_attempt_task(_MemoryHuey(name=pool, results=False))


@dataclass
class AttemptSpec:
    """One attempt (and the retries left after it) for a task of ours."""

    task_id: str
    retries: int
    retry_delay: float = 0
    retry_backoff: float = 1
    priority: int = 0
    expires_at: float | None = None
    delay: float | None = None


def _huey_task(huey, spec: AttemptSpec):
    eta = None
    if spec.delay:
        eta = _utc_naive(datetime.datetime.now(datetime.timezone.utc).timestamp() + spec.delay)
    task = huey.attempt.task_class(
        (spec.task_id,), {}, eta=eta, retries=spec.retries, retry_delay=spec.retry_delay or 0,
        retry_backoff=spec.retry_backoff if spec.retry_backoff and spec.retry_backoff != 1 else None,
        priority=spec.priority, expires=_utc_naive(spec.expires_at) if spec.expires_at else None,
    )
    if task.expires:
        task.resolve_expires(huey.utc)
    return task


def enqueue_attempt(huey, task_id: str, **options) -> None:
    """Put one attempt for ``task_id`` on ``huey``'s queue (on its schedule if ``delay`` is given)."""
    task = _huey_task(huey, AttemptSpec(task_id, **options))
    if task.eta is not None:
        huey.add_schedule(task)
    else:
        huey.enqueue(task)


def enqueue_attempts(huey, specs: list[AttemptSpec]) -> None:
    """Many first attempts in one write of the queue's storage (one transaction in SQLite)."""
    huey.storage.enqueue_many([(huey.serialize_task(_huey_task(huey, spec)), spec.priority or 0) for spec in specs])


def _utc_naive(ts: float) -> datetime.datetime:
    # Huey (utc=True) compares naive UTC datetimes.
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).replace(tzinfo=None)
