"""Where the queue lives: a SQLite file on this machine, or a Redis server shared by machines.

Every process (server, supervisor, worker) opens the same :class:`Backend` and asks
it for the task store, the Huey queue of a pool and the bells. With SQLite all of it
is in the state directory and FIFOs wake sleepers. With Redis the store and the
queues are in Redis, the bells are Redis lists (an idle worker sleeps in ``BLPOP`` on
the bells of all its pools, so a task submitted anywhere wakes it at once), workers
announce task changes on a Redis list that the server relays to its local event
FIFO, and task files live in ``files``, a directory every machine mounts.
"""

from __future__ import annotations

import json
import logging
import os
import select
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .doorbell import Doorbell, events_bell, work_bell
from .objectstore import ObjectStore, is_url
from .queue import POOLS, QueueMap
from .statedir import StateDir, default_state_dir
from .store import SqliteTaskStore, TaskStore

log = logging.getLogger("jupyter_taskq.backend")

REDIS_URL_ENV = "JUPYTER_TASKQ_REDIS_URL"
FILES_OPTIONS_ENV = "JUPYTER_TASKQ_FILES_OPTIONS"  # fsspec options (JSON) of an object store
RELAY_WAIT = 2.0  # one BLPOP of the relay; under redis-py's 5 s socket timeout
EVENTS_KEPT = 10_000  # a server away for long finds at most this many change notes waiting


class RedisBell:
    """A bell any machine can ring: a capped Redis list, listened to with ``BLPOP``."""

    def __init__(self, client, key: str):
        self.client = client
        self.key = key

    def ring(self, message: bytes = b".") -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(self.key, message)
        pipe.ltrim(self.key, -EVENTS_KEPT, -1)
        pipe.execute()

    def ring_times(self, n: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(self.key, *([b"."] * max(1, n)))
        pipe.ltrim(self.key, -EVENTS_KEPT, -1)
        pipe.execute()

    def wait(self, timeout: float) -> bytes | None:
        popped = self.client.blpop([self.key], timeout=max(0.01, timeout))
        return popped[1] if popped else None


def wait_for_any(bells: list, timeout: float) -> bool:
    """Sleep until one of ``bells`` (all FIFOs, or all Redis bells) rings, or ``timeout``; consume one ring."""
    if len(bells) == 1:
        return bool(bells[0].wait(timeout))
    if isinstance(bells[0], RedisBell):
        return bool(bells[0].client.blpop([b.key for b in bells], timeout=max(0.01, timeout)))
    ready, _, _ = select.select([b.fileno() for b in bells], [], [], max(0.0, timeout))
    for bell in bells:
        if bell.fileno() in ready and bell.wait(0):
            return True
    return False


@dataclass(frozen=True)
class Backend:
    state: StateDir
    redis_url: str = ""
    prefix: str = "jtq:"
    objects: ObjectStore = field(default=None)  # type: ignore[assignment]

    @classmethod
    def open(cls, state_dir: str | Path | None, redis_url: str = "", files_dir: str | Path | None = None,
             prefix: str = "jtq:", files_options: dict | None = None) -> "Backend":
        """``files_dir``: a directory every machine mounts, or an fsspec URL (``s3://bucket/prefix``)."""
        if files_dir and not redis_url:
            raise ValueError("a separate files directory is for a Redis queue (give a Redis URL too)")
        if is_url(files_dir):
            root = Path(state_dir) if state_dir else default_state_dir()
            state = StateDir.create(root, root / "files")  # this machine's copies of the task files
            if files_options is None:
                files_options = json.loads(os.environ.get(FILES_OPTIONS_ENV) or "{}")
            objects = ObjectStore(state.files, str(files_dir), files_options)
        else:
            state = StateDir.create(state_dir, files_dir if redis_url else None)
            objects = ObjectStore(state.files)
        return cls(state, redis_url, prefix, objects)

    @property
    def kind(self) -> str:
        return "redis" if self.redis_url else "sqlite"

    def child_args(self) -> list[str]:
        """Command-line flags that make a child process open this same backend (with :meth:`child_env`)."""
        args = ["--state-dir", str(self.state.root)]
        if self.redis_url:
            args += ["--files-dir", self.objects.url or str(self.state.files)]
        return args

    def child_env(self) -> dict[str, str]:
        """The Redis URL goes to children in their environment: a command line (with the password
        in it) is readable by every user of the machine."""
        env = {REDIS_URL_ENV: self.redis_url} if self.redis_url else {}
        if self.objects.options:
            env[FILES_OPTIONS_ENV] = json.dumps(self.objects.options)  # may hold object-store credentials
        return env

    def _redis(self):
        import redis

        return redis.Redis.from_url(self.redis_url)

    def open_store(self) -> TaskStore:
        if self.redis_url:
            from .store_redis import RedisTaskStore

            return RedisTaskStore(self.redis_url, self.prefix)
        return SqliteTaskStore(self.state.db)

    def open_queue(self, pool: str):
        from .queue import open_queue, open_redis_queue

        if self.redis_url:
            return open_redis_queue(self.redis_url, pool, self.prefix)
        return open_queue(self.state, pool)

    def open_queues(self, pools=POOLS) -> QueueMap:
        """The queues of ``pools`` now, and of any other pool (a GPU model's) when first asked for."""
        return QueueMap(self.open_queue, pools)

    def work_bell(self, pool: str) -> Doorbell | RedisBell:
        """Rung when ``pool`` gets work; its idle workers sleep on it."""
        if self.redis_url:
            return RedisBell(self._redis(), f"{self.prefix}bell:{pool}")
        return work_bell(self.state.bells, pool)

    def work_bells(self) -> "BellMap":
        return BellMap(self.work_bell)

    def events_ringer(self) -> Doorbell | RedisBell:
        """What a worker rings with the id of a task whose state it changed."""
        if self.redis_url:
            return RedisBell(self._redis(), f"{self.prefix}events")
        return events_bell(self.state.bells)

    def events_listener(self) -> Doorbell:
        """The server's local event FIFO; with Redis, fed from the shared list by a relay thread."""
        local = events_bell(self.state.bells)
        if self.redis_url:
            EventRelay(RedisBell(self._redis(), f"{self.prefix}events"), local).start()
        return local


class BellMap(dict):
    """Pool name -> its work bell, made the first time a pool is rung."""

    def __init__(self, maker):
        super().__init__()
        self._maker = maker

    def __missing__(self, pool: str):
        bell = self[pool] = self._maker(pool)
        return bell


class EventRelay(threading.Thread):
    """Moves change notes from the shared Redis list to this server's FIFO, as they come."""

    def __init__(self, source: RedisBell, target: Doorbell):
        super().__init__(daemon=True, name="taskq-event-relay")
        self.source = source
        self.target = target

    def run(self) -> None:
        while True:
            try:
                message = self.source.wait(RELAY_WAIT)
            except Exception:  # Redis restarting: keep trying
                log.warning("jupyter-taskq: lost Redis while relaying task events; retrying", exc_info=True)
                threading.Event().wait(1.0)
                continue
            if message:
                self.target.ring(message)
