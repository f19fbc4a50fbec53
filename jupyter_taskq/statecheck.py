"""Refuse a SQLite state directory that would lose tasks, before anything opens or creates its database.

Two ways a queue could start wrong and lose work without a word: a database SQLite cannot read
(a disk fault, a half-copied backup) and a database that is missing or empty while task files
(payloads, results) lie beside it, whose records it held. Opening the first fails deep in the
store; opening the second would silently create an empty queue with every old payload and result
orphaned. Both are refused here with a :class:`StateRefused` that names the file and what to do;
nothing is changed on disk.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

DB_NAME = "taskq.db"  # statedir.StateDir.db
TASK_FILE_DIRS = ("payloads", "results", "blobs")
TASKS_TABLE = "taskq_tasks"


class StateRefused(RuntimeError):
    """The state directory holds something a queue must not start on; the message says what to do."""


def _first_task_file(root: Path) -> Path | None:
    for sub in TASK_FILE_DIRS:
        try:
            with os.scandir(root / sub) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        return Path(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return None


def _has_tasks_table(db: Path) -> bool:
    """Whether ``db`` holds the queue's schema; raises sqlite3.DatabaseError when SQLite cannot read it.

    The file is opened for reading and writing as the store opens it (a read-only open of a WAL
    database needs the -shm file, and a database whose pages are still in its -wal file reads right).
    """
    conn = sqlite3.connect(db, timeout=60.0, isolation_level=None)
    try:
        row = conn.execute("select count(*) from sqlite_master where type = 'table' and name = ?",
                           (TASKS_TABLE,)).fetchone()
        return bool(row[0])
    finally:
        conn.close()


def _move_aside(root: Path) -> str:
    return f"mv {root} {root}.old"


def check_sqlite_state(root: str | os.PathLike) -> None:
    """Raise :class:`StateRefused` when the database in ``root`` cannot be read, or when it is missing or
    empty while task files are beside it. A new state directory (no database, no task files) passes."""
    root = Path(root)
    db = root / DB_NAME
    nothing_changed = "nothing was changed"
    if db.exists():
        try:
            has_tasks = _has_tasks_table(db)  # a 0-byte file reads as a database without tables
        except sqlite3.DatabaseError as exc:
            raise StateRefused(
                f"the queue database {db} cannot be opened ({exc}). Restore it from a backup, or move the "
                f"state directory aside to start an empty queue ({_move_aside(root)}); {nothing_changed}") from None
        if has_tasks:
            return
        what = "empty"
    else:
        what = "missing"
    task_file = _first_task_file(root)
    if task_file is not None:
        raise StateRefused(
            f"the queue database {db} is {what}, but task files of the tasks it recorded are beside it (e.g. "
            f"{task_file}): starting would orphan them. Restore the database from a backup, or move the state "
            f"directory aside to start an empty queue ({_move_aside(root)}); {nothing_changed}")
