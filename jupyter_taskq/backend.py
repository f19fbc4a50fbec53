"""Where the queue lives: a SQLite file on this machine, or a Redis server shared by machines.

Every process (server, supervisor, worker) opens the same :class:`Backend` and asks
it for the task store, the Huey queue of a pool and the bells. With SQLite all of it
is in the state directory and FIFOs wake sleepers. With Redis the store and the
queues are in Redis, an idle worker waits in Huey's own blocking pop (``BZPOPMIN``,
so a submitted task wakes it at once from any machine), workers announce task
changes on a Redis list that the server relays to its local event FIFO, and task
files live in ``files``, a directory every machine mounts.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from .doorbell import Doorbell, events_bell, work_bell
from .statedir import StateDir
from .store import SqliteTaskStore, TaskStore

log = logging.getLogger("jupyter_taskq.backend")

REDIS_URL_ENV = "JUPYTER_TASKQ_REDIS_URL"
IDLE_WAIT = 0.5  # how long an idle worker waits for work before its housekeeping
EVENTS_KEPT = 10_000  # a server away for long finds at most this many change notes waiting


class NoBell:
    """Stands in for a work bell where the queue's own blocking pop does the waking."""

    def ring(self, message: bytes = b".") -> None:
        pass

    def wait(self, timeout: float) -> bool:
        return False


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

    def wait(self, timeout: float) -> bytes | None:
        popped = self.client.blpop([self.key], timeout=max(0.01, timeout))
        return popped[1] if popped else None


@dataclass(frozen=True)
class Backend:
    state: StateDir
    redis_url: str = ""
    prefix: str = "jtq:"

    @classmethod
    def open(cls, state_dir: str | Path | None, redis_url: str = "", files_dir: str | Path | None = None,
             prefix: str = "jtq:") -> "Backend":
        if files_dir and not redis_url:
            raise ValueError("a separate files directory is for a Redis queue (give a Redis URL too)")
        return cls(StateDir.create(state_dir, files_dir if redis_url else None), redis_url, prefix)

    @property
    def kind(self) -> str:
        return "redis" if self.redis_url else "sqlite"

    def child_args(self) -> list[str]:
        """Command-line flags that make a child process open this same backend (with :meth:`child_env`)."""
        args = ["--state-dir", str(self.state.root)]
        if self.redis_url:
            args += ["--files-dir", str(self.state.files)]
        return args

    def child_env(self) -> dict[str, str]:
        """The Redis URL goes to children in their environment: a command line (with the password
        in it) is readable by every user of the machine."""
        return {REDIS_URL_ENV: self.redis_url} if self.redis_url else {}

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
            return open_redis_queue(self.redis_url, pool, self.prefix, read_timeout=IDLE_WAIT)
        return open_queue(self.state, pool)

    def work_bell(self, pool: str) -> Doorbell | NoBell:
        return NoBell() if self.redis_url else work_bell(self.state.bells, pool)

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


class EventRelay(threading.Thread):
    """Moves change notes from the shared Redis list to this server's FIFO, as they come."""

    def __init__(self, source: RedisBell, target: Doorbell):
        super().__init__(daemon=True, name="taskq-event-relay")
        self.source = source
        self.target = target

    def run(self) -> None:
        while True:
            try:
                message = self.source.wait(5.0)
            except Exception:  # Redis restarting: keep trying
                log.warning("jupyter-taskq: lost Redis while relaying task events; retrying", exc_info=True)
                threading.Event().wait(1.0)
                continue
            if message:
                self.target.ring(message)
