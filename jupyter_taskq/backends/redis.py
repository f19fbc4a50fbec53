"""The Redis backend: a queue shared by machines.

The store (redis_store.py) and the queues are in Redis, the bells are Redis lists (an idle worker sleeps
in ``BLPOP`` on the bells of all its pools, so a task submitted anywhere wakes it at once), workers
announce task changes on a Redis list that the server relays to its local event FIFO, and task files
live in ``files``: a directory every machine mounts, or an object store. The Redis URL (it may hold a
password) reaches children in their environment, never on a command line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

from .base import Backend, Bell
from .doorbell import Doorbell, events_bell

log = logging.getLogger("jupyter_taskq.backend")

REDIS_URL_ENV = "JUPYTER_TASKQ_REDIS_URL"
RELAY_WAIT = 2.0  # one BLPOP of the relay; under redis-py's 5 s socket timeout
EVENTS_KEPT = 10_000  # a server away for long finds at most this many change notes waiting


class RedisBackend(Backend):
    name = "redis"
    shared = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._relays: list[EventRelay] = []

    def _client(self):
        import redis

        return redis.Redis.from_url(self.url)

    # -- health -------------------------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Refuse a Redis that keeps nothing on disk (redis_store.VolatileRedis), unless allowed."""
        from .redis_store import check_persistence

        found = check_persistence(self.url, self.allow_volatile)
        if found["aof"] or found["rdb"]:
            return []
        return ["the Redis server has no persistence (redis_allow_volatile=True): a restart of Redis loses every task"]

    # -- state --------------------------------------------------------------------------------------------
    def open_store(self):
        from .redis_store import RedisTaskStore

        return RedisTaskStore(self.url, self.prefix)

    def open_queue(self, pool: str):
        from .hueyqueue import open_redis_queue

        return open_redis_queue(self.url, pool, self.prefix)

    def schedule_records(self) -> RedisScheduleRecords:
        return RedisScheduleRecords(self._client(), self.prefix)

    # -- bells --------------------------------------------------------------------------------------------
    def work_bell(self, pool: str) -> RedisBell:
        return RedisBell(self._client(), f"{self.prefix}bell:{pool}")

    def wait_for_any(self, bells: list, timeout: float) -> bool:
        """One ``BLPOP`` on the lists of all ``bells`` (this backend's work bells)."""
        if len(bells) == 1:
            return bool(bells[0].wait(timeout))
        return bool(bells[0].client.blpop([b.key for b in bells], timeout=max(0.01, timeout)))

    def events_ringer(self) -> RedisBell:
        return RedisBell(self._client(), f"{self.prefix}events")

    def events_listener(self) -> Doorbell:
        """The server's local event FIFO, fed from the shared list by a relay thread."""
        local = events_bell(self.state.bells)
        relay = EventRelay(self.events_ringer(), local)
        relay.start()
        self._relays.append(relay)
        return local

    def close(self) -> None:
        for relay in self._relays:
            relay.stopped.set()  # it ends within one BLPOP (RELAY_WAIT)
        self._relays.clear()

    # -- children -----------------------------------------------------------------------------------------
    def child_args(self) -> list[str]:
        return [*super().child_args(), *self.remote_child_args()]

    def remote_child_args(self) -> list[str]:
        return ["--files-dir", self.objects.url or str(self.state.files)]

    def child_env(self) -> dict[str, str]:
        return {**super().child_env(), REDIS_URL_ENV: self.url}

    # -- secrets, address ---------------------------------------------------------------------------------
    @classmethod
    def secrets_in(cls, env: Mapping[str, str]) -> list[str]:
        url = env.get(REDIS_URL_ENV, "")
        if not url:
            return []
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        return [url, password or ""]

    def address(self) -> str:
        """``host:port/db`` (no password); the URL itself when it does not parse."""
        try:
            parts = urlsplit(self.url)
            return f"{parts.hostname}:{parts.port}{parts.path}"
        except ValueError:
            return self.url

    def host(self) -> str:
        return (urlsplit(self.url).hostname or "") if "://" in self.url else ""


class RedisBell(Bell):
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


class EventRelay(threading.Thread):
    """Moves change notes from the shared Redis list to this server's FIFO, as they come."""

    def __init__(self, source: RedisBell, target: Doorbell):
        super().__init__(daemon=True, name="taskq-event-relay")
        self.source = source
        self.target = target
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                message = self.source.wait(RELAY_WAIT)
            except Exception:  # Redis restarting: keep trying
                if self.stopped.is_set():
                    return
                log.warning("jupyter-taskq: lost Redis while relaying task events; retrying", exc_info=True)
                self.stopped.wait(1.0)
                continue
            if message:
                self.target.ring(message)


class RedisScheduleRecords:
    """Schedule records as JSON text in one Redis hash (shared by every server of the queue)."""

    def __init__(self, client, prefix: str):
        self.redis = client
        self.key = f"{prefix}schedules"
        from .redis_store import lua_source

        self._swap = self.redis.register_script(lua_source("schedule_swap"))

    def all(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(self.key).items()}

    def get(self, schedule_id: str) -> str | None:
        raw = self.redis.hget(self.key, schedule_id)
        return raw.decode() if raw is not None else None

    def add(self, schedule_id: str, data: str) -> None:
        self.redis.hsetnx(self.key, schedule_id, data)

    def swap(self, schedule_id: str, old: str, new: str) -> bool:
        return self._swap(keys=[self.key], args=[schedule_id, old, new]) == 1

    def remove(self, schedule_id: str) -> bool:
        return self.redis.hdel(self.key, schedule_id) == 1
