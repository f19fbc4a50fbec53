"""The SQLite backend: one machine's queue, in the state directory.

The task store and Huey's queues share one SQLite file (WAL); named pipes in the state directory wake
idle workers and the server (doorbell.py). The default backend: nothing to install or run.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ..statecheck import check_sqlite_state
from .base import Backend
from .doorbell import Doorbell, events_bell, work_bell
from .sqlite_store import SqliteTaskStore


class SqliteBackend(Backend):
    name = "sqlite"

    def check(self) -> list[str]:
        """A database SQLite cannot read, or one missing while task files lie beside it: refused
        (statecheck.StateRefused), before the store opens or creates it."""
        check_sqlite_state(self.state_root)
        return []

    def open_store(self) -> SqliteTaskStore:
        return SqliteTaskStore(self.state.db)

    def open_queue(self, pool: str):
        from .hueyqueue import open_queue

        return open_queue(self.state, pool)

    def schedule_records(self) -> SqliteScheduleRecords:
        return SqliteScheduleRecords(self.state.db)

    def work_bell(self, pool: str) -> Doorbell:
        return work_bell(self.state.bells, pool)

    def events_ringer(self) -> Doorbell:
        return events_bell(self.state.bells)

    def events_listener(self) -> Doorbell:
        return events_bell(self.state.bells)


class SqliteScheduleRecords:
    """Schedule records as JSON text in the queue's SQLite file (its own connection: server only)."""

    def __init__(self, path: Path | str):
        self._conn = sqlite3.connect(str(path), timeout=60, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("create table if not exists taskq_schedules (id text primary key, data text not null)")

    def all(self) -> dict[str, str]:
        with self._lock:
            return dict(self._conn.execute("select id, data from taskq_schedules").fetchall())

    def get(self, schedule_id: str) -> str | None:
        with self._lock:
            row = self._conn.execute("select data from taskq_schedules where id = ?", (schedule_id,)).fetchone()
        return row[0] if row else None

    def add(self, schedule_id: str, data: str) -> None:
        with self._lock:
            self._conn.execute("insert into taskq_schedules (id, data) values (?, ?)", (schedule_id, data))

    def swap(self, schedule_id: str, old: str, new: str) -> bool:
        with self._lock:
            return self._conn.execute("update taskq_schedules set data = ? where id = ? and data = ?",
                                      (new, schedule_id, old)).rowcount == 1

    def remove(self, schedule_id: str) -> bool:
        with self._lock:
            return self._conn.execute("delete from taskq_schedules where id = ?", (schedule_id,)).rowcount == 1
