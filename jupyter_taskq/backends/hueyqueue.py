"""The Huey side of the queue: one Huey queue per pool in the state SQLite file.

Huey registers tasks by module path, so a notebook's function cannot be a Huey
task. Instead every pool has one registered Huey task, ``attempt(task_id)``, and
the payload lives in the state directory. Huey gives us the durable queue,
priorities, ``expires``, and retries with delay and backoff (through its
schedule); our store keeps what users see. The server only enqueues; the worker
installs the function that runs an attempt with :func:`set_attempt_runner`.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Callable

from huey import PriorityRedisHuey, SqliteHuey
from huey.storage import SqliteStorage

from .statedir import StateDir

CPU_POOL = "cpu"
GPU_POOL = "gpu"
POOLS = (CPU_POOL, GPU_POOL)  # always there; a GPU model adds a pool "gpu:<model>" for tasks asking for it
MODEL_POOL_PREFIX = GPU_POOL + ":"


def model_pool(model: str) -> str:
    """The pool of tasks that ask for GPU model ``model`` (a name its workers report)."""
    return MODEL_POOL_PREFIX + model


def pool_model(pool: str) -> str | None:
    return pool[len(MODEL_POOL_PREFIX):] if pool.startswith(MODEL_POOL_PREFIX) else None


def check_pool(pool: str) -> str:
    if pool not in POOLS and not (pool_model(pool) or "").strip():
        raise ValueError(f"unknown pool {pool!r}")
    return pool


class QueueMap(dict):
    """Pool name -> its Huey queue, opened the first time a pool is asked for."""

    def __init__(self, opener: Callable[[str], object], pools=POOLS):
        super().__init__()
        self._opener = opener
        for pool in pools:
            self[pool]

    def __missing__(self, pool: str):
        queue = self[pool] = self._opener(check_pool(pool))
        return queue

_attempt_runner: Callable | None = None


def set_attempt_runner(runner: Callable) -> None:
    """Install ``runner(task_id, huey_task)``, called by Huey for each dequeued attempt."""
    global _attempt_runner
    _attempt_runner = runner


def _run_attempt(task_id: str, task=None):
    if _attempt_runner is None:  # only a worker runs attempts
        raise RuntimeError("no attempt runner installed in this process")
    return _attempt_runner(task_id, task)


class _Storage(SqliteStorage):
    """Huey's SQLite storage with WAL and ``synchronous=NORMAL``: durable across process
    kills, without an fsync per commit."""

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("pragma synchronous=NORMAL")
        return conn


class _Huey(SqliteHuey):
    storage_class = _Storage


def open_queue(state: StateDir, pool: str) -> SqliteHuey:
    check_pool(pool)
    huey = _Huey(name=pool, filename=str(state.db), results=False, timeout=60, journal_mode="wal")
    huey.attempt = huey.task(name="attempt", context=True)(_run_attempt)
    return huey


def open_redis_queue(url: str, pool: str, prefix: str = "jtq:") -> PriorityRedisHuey:
    """The pool's queue in Redis: a sorted set, so priorities hold across machines. Dequeuing
    does not block: a worker serving several pools sleeps on their bells instead."""
    check_pool(pool)
    huey = PriorityRedisHuey(name=f"{prefix}{pool}", url=url, results=False, blocking=False,
                             clean_name=False)
    huey.attempt = huey.task(name="attempt", context=True)(_run_attempt)
    return huey


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


def _huey_task(huey: SqliteHuey, spec: AttemptSpec):
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


def enqueue_attempt(huey: SqliteHuey, task_id: str, **options) -> None:
    """Put one attempt for ``task_id`` on ``huey``'s queue (on its schedule if ``delay`` is given)."""
    task = _huey_task(huey, AttemptSpec(task_id, **options))
    if task.eta is not None:
        huey.add_schedule(task)
    else:
        huey.enqueue(task)


def enqueue_attempts(huey, specs: list[AttemptSpec]) -> None:
    """Many first attempts in one transaction: a batch of 2,000 costs one commit, not 2,000."""
    if not isinstance(huey, SqliteHuey):
        for spec in specs:
            huey.enqueue(_huey_task(huey, spec))
        return
    rows = [(huey.name, huey.serialize_task(_huey_task(huey, spec)), spec.priority or 0) for spec in specs]
    with huey.storage.db(commit=True) as cursor:
        cursor.executemany("insert into task (queue, data, priority) values (?, ?, ?)", rows)


def _utc_naive(ts: float) -> datetime.datetime:
    # Huey (utc=True) compares naive UTC datetimes.
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).replace(tzinfo=None)
