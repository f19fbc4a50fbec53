"""The memory backend: the whole queue in this one process, for fast in-process tests (as huey's MemoryHuey).

The task store is the SQLite store on an in-memory database, the queues are Huey's memory storage, the
bells are anonymous pipes and the schedule records a dict; task files (payloads, results) are still files,
in the state directory (a fresh temporary one by default). Everything lives in the :class:`MemoryBackend`
instance: every part of the test (service, schedules, a worker run in a thread) must share that one
instance, and no other process can reach it, so :meth:`MemoryBackend.child_args` and ``child_env`` refuse
with :class:`~.base.BackendError` (a server on it needs ``c.TaskQueue.start_workers = False``).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable

from .base import Backend, BackendError
from .doorbell import Doorbell
from .sqlite_store import SqliteTaskStore


class MemoryBackend(Backend):
    name = "memory"

    @classmethod
    def open(cls, state_dir=None, url: str = "", files_dir=None, files_options=None, prefix: str = "jtq:",
             allow_volatile: bool = False) -> MemoryBackend:
        return super().open(state_dir or tempfile.mkdtemp(prefix="taskq-memory-"), url, files_dir, files_options,
                            prefix, allow_volatile)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._store: MemoryTaskStore | None = None
        self._queues: dict[str, object] = {}
        self._bells: dict[str, PipeBell] = {}
        self._events = PipeBell()
        self._records = MemoryScheduleRecords()

    def open_store(self) -> MemoryTaskStore:
        with self._lock:
            if self._store is None:
                self._store = MemoryTaskStore()
            return self._store

    def open_queue(self, pool: str):
        from .hueyqueue import open_memory_queue

        with self._lock:
            if pool not in self._queues:
                self._queues[pool] = open_memory_queue(pool)
            return self._queues[pool]

    def schedule_records(self) -> MemoryScheduleRecords:
        return self._records

    def work_bell(self, pool: str) -> PipeBell:
        with self._lock:
            return self._bells.setdefault(pool, PipeBell())

    def events_ringer(self) -> PipeBell:
        return self._events

    def events_listener(self) -> PipeBell:
        return self._events

    def child_args(self) -> list[str]:
        raise self._no_children()

    def child_env(self) -> dict[str, str]:
        raise self._no_children()

    def secrets(self) -> list[str]:
        return []  # no credentials: nothing outside this process reaches it

    @staticmethod
    def _no_children() -> BackendError:
        return BackendError("the memory backend keeps the queue inside this process: no worker process can join "
                            "it. Run workers in this process (c.TaskQueue.start_workers = False) or use the "
                            "sqlite backend")


class MemoryTaskStore(SqliteTaskStore):
    """The SQLite store on one in-memory database, every read and write behind the store's lock (a
    reader sees a batch whole or not at all, as with a SQLite file)."""

    def __init__(self):
        super().__init__(":memory:")

    def _reader(self):
        return self._conn

    def _read(self, sql: str, params: Iterable = ()):
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        """Nothing: the backend's one store lives as long as the backend (every opener shares it)."""


class PipeBell(Doorbell):
    """A doorbell on an anonymous pipe: a FIFO without a file, for listeners in this process."""

    def __init__(self):
        self.path = None
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def close(self) -> None:
        """Nothing: the bell lives as long as the backend (its listener and its ringers share it)."""


class MemoryScheduleRecords:
    """Schedule records as JSON text in a dict."""

    def __init__(self) -> None:
        self._records: dict[str, str] = {}
        self._lock = threading.Lock()

    def all(self) -> dict[str, str]:
        with self._lock:
            return dict(self._records)

    def get(self, schedule_id: str) -> str | None:
        with self._lock:
            return self._records.get(schedule_id)

    def add(self, schedule_id: str, data: str) -> None:
        with self._lock:
            self._records.setdefault(schedule_id, data)

    def swap(self, schedule_id: str, old: str, new: str) -> bool:
        with self._lock:
            if self._records.get(schedule_id) != old:
                return False
            self._records[schedule_id] = new
            return True

    def remove(self, schedule_id: str) -> bool:
        with self._lock:
            return self._records.pop(schedule_id, None) is not None
