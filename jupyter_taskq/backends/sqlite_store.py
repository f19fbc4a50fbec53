"""Task state in the queue's own SQLite file, beside Huey's tables: the SQLite backend's store.

One machine's queue: the server and its workers open the same file (WAL), so a conditional UPDATE is
the whole of the race-freedom the contract (``taskstore.TaskStore``) asks for.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import sqlite3
import threading
import time
from typing import Any
from collections.abc import Iterable

from .. import attempts as attempt_log
from ..status import FINAL, WAITING, TaskStatus
from .taskstore import (CANCELLED_AT_CLAIM, JSON_COLUMNS, TASK_COLUMNS, USAGE_KEPT, TaskStore, stored_not_before)

#: The waiting statuses as an SQL list of literals (a partial index's condition must match them as written).
_WAITING_SQL = "(" + ", ".join(f"'{status.value}'" for status in sorted(WAITING)) + ")"

_SCHEMA = """
create table if not exists taskq_tasks (
    seq integer primary key autoincrement,
    id text not null unique,
    name text, status text not null, pool text not null, gpu integer not null default 0,
    created_at real not null, started_at real, ended_at real, updated_at real not null,
    attempt integer not null default 0, max_retries integer not null default 3,
    retry_delay real not null default 0, retry_backoff real not null default 1,
    timeout real, expires real, expires_at real, priority integer not null default 0,
    callback_url text, worker text, worker_instance text, error text, progress text,
    cancel_requested integer not null default 0, retry_of text,
    result_ttl real, result_size integer, result_expired integer not null default 0
);
create index if not exists taskq_tasks_status on taskq_tasks (status);
create table if not exists taskq_workers (
    name text primary key, instance text not null, pool text not null, device text,
    host text, pid integer, started_at real, heartbeat_at real, state text, current_task text
);
"""


_ADDED_COLUMNS = {"outputs": "text", "log_dropped": "integer not null default 0", "callback": "text",
                  "callback_done": "integer not null default 0", "keep_warm_seconds": "real", "cpu": "real",
                  "memory": "integer", "retry_for": "text",
                  "blob": "text", "notebook": "text", "cell_id": "text", "owner": "text", "not_before": "real",
                  "seed": "text",
                  "limits": "text", "image": "text", "environment": "text", "waiting_for_gpus": "text",
                  "held": "integer not null default 0", "depends_on": "text",
                  "waiting_for": "text", "after_any_outcome": "integer not null default 0", "start_at": "real",
                  "schedule_id": "text", "ready_at": "real"}


class SqliteTaskStore(TaskStore):
    """Task state in the queue's own SQLite file (WAL, so readers never block writers).

    Writes go through one connection behind a lock. Read-only queries use a connection of their own
    per thread (``query_only``): in WAL mode a reader sees the last committed state without waiting,
    so ``GET stats`` or a task listing answers while a 20,000-task batch's transaction holds the
    writer (issue 13). Every write commits before it returns (autocommit, or an explicit commit), so a
    read that follows a write, in any thread, sees it.
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0):
        self.path = str(path)
        self._timeout = timeout
        self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._local = threading.local()  # .conn: this thread's reader
        self._readers: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        with self._lock:
            _set_wal(self._conn, timeout)
            self._conn.execute("pragma synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            self._add_missing_columns()
            self._conn.executescript(attempt_log.SQLITE_SCHEMA)
            self._date_old_retries()

    def _add_missing_columns(self) -> None:
        """Columns added after a database was created (the schema only grows)."""
        have = {row[1] for row in self._conn.execute("pragma table_info(taskq_tasks)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in have:
                self._conn.execute(f"alter table taskq_tasks add column {column} {kind}")
        workers_have = {row[1] for row in self._conn.execute("pragma table_info(taskq_workers)")}
        for column, kind in (("model", "text"), ("cpus", "integer"), ("memory_mib", "integer"), ("warm", "text"),
                             ("drop_warm", "integer not null default 0"), ("drop_warm_owners", "text"),
                             ("gpus", "text")):  # gpus: the devices its attempt holds ("2,3"), or that hold it
            if column not in workers_have:  # what the worker's machine has (cpu= and memory= are checked against it)
                self._conn.execute(f"alter table taskq_workers add column {column} {kind}")
        self._conn.execute("create index if not exists taskq_tasks_callbacks on taskq_tasks (callback_done) "
                           "where callback_url is not null")
        # Makes fingerprint() (asked once a second by every open `GET changes` long-poll) an index look-up.
        self._conn.execute("create index if not exists taskq_tasks_updated on taskq_tasks (updated_at)")
        self._conn.execute("create index if not exists taskq_tasks_blob on taskq_tasks (blob) where blob is not null")
        self._conn.execute("create table if not exists taskq_blob_owners (blob text not null, owner text not null, "
                           "primary key (blob, owner)) without rowid")
        self._conn.execute("create index if not exists taskq_tasks_owner on taskq_tasks (owner, status)")
        # cell_counts(): one notebook's tasks by cell and status, from the index alone.
        self._conn.execute("create index if not exists taskq_tasks_notebook on taskq_tasks (notebook, cell_id, status) "
                           "where notebook is not null")
        # Stats' waiting-per-pool from an index of the waiting tasks alone (20,000 waiting: 2.7 ms reading
        # each row for its pool, about 1 ms from this index). Partial, so finished tasks cost it nothing;
        # the (status) index stays: it hands a status's tasks over in seq order, as the task list pages them.
        self._conn.execute("create index if not exists taskq_tasks_waiting_pool on taskq_tasks (status, pool) "
                           f"where status in {_WAITING_SQL}")
        self._conn.execute("create index if not exists taskq_tasks_status on taskq_tasks (status)")
        self._conn.execute("drop index if exists taskq_tasks_status_pool")  # an interim index of 2026-11-28
        self._conn.execute("create table if not exists taskq_gpu_ledger (owner text, started_at real, ended_at real)")
        self._conn.execute("create table if not exists taskq_task_tokens (digest text primary key, "
                           "task_id text not null, attempt integer not null, owner text, created_at real)")
        self._conn.execute("create index if not exists taskq_gpu_ledger_ended on taskq_gpu_ledger (ended_at)")
        if "gpus" not in {row[1] for row in self._conn.execute("pragma table_info(taskq_gpu_ledger)")}:
            self._conn.execute("alter table taskq_gpu_ledger add column gpus integer")  # a gpu=N task's N
        # The server's sweep reads the held tasks alone (issue 24): a partial index, free for every other task.
        self._conn.execute("create index if not exists taskq_tasks_held on taskq_tasks (seq) where held = 1")

    def _date_old_retries(self) -> None:
        """A RETRY written before ``not_before`` existed would start at once under fair share: it gets the end
        of its retry delay (:func:`stored_not_before`). Every later RETRY is written with one."""
        rows = self._conn.execute("select id, attempt, retry_delay, retry_backoff, updated_at from taskq_tasks "
                                  "where status = 'RETRY' and not_before is null").fetchall()
        for row in rows:
            not_before = stored_not_before(dict(row))
            if not_before is not None:
                self._conn.execute("update taskq_tasks set not_before = ? where id = ? and status = 'RETRY' "
                                   "and not_before is null", (not_before, row["id"]))

    def close(self) -> None:
        with self._readers_lock:
            self._closed = True
            readers, self._readers = self._readers, []
        for _thread, conn in readers:
            conn.close()
        self._conn.close()

    # -- helpers ----------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection, opened on first use. Readers of threads that have ended
        are closed here, so a server whose thread pool turns over keeps no stray connections."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("pragma synchronous=NORMAL")
        conn.execute("pragma query_only=1")
        with self._readers_lock:
            if self._closed:
                conn.close()
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            ended = [(t, c) for t, c in self._readers if not t.is_alive()]
            self._readers = [(t, c) for t, c in self._readers if t.is_alive()] + [(threading.current_thread(), conn)]
        for _thread, stale in ended:
            stale.close()
        self._local.conn = conn
        return conn

    def _read(self, sql: str, params: Iterable = ()) -> builtins.list[sqlite3.Row]:
        """A read-only query on this thread's reader (fetched to the end: no read transaction stays open)."""
        return self._reader().execute(sql, tuple(params)).fetchall()

    def _rows(self, sql: str, params: Iterable = ()) -> builtins.list[dict]:
        return [_row_to_task(r) for r in self._read(sql, params)]

    def _write(self, sql: str, params: Iterable = ()) -> int:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).rowcount

    @contextlib.contextmanager
    def batch(self):
        """One transaction (each page written once: what a cancel on a full disk needs, service.cancel)."""
        with self._lock:
            self._conn.execute("begin immediate")
            try:
                yield
                self._conn.execute("commit")
            except BaseException:
                if self._conn.in_transaction:  # SQLite may have rolled back itself (a full disk)
                    self._conn.execute("rollback")
                raise

    # -- tasks ------------------------------------------------------------
    def create(self, task: dict) -> None:
        cols = [c for c in TASK_COLUMNS if c in task]
        values = [_to_db(c, task[c]) for c in cols]
        self._write(
            f"insert into taskq_tasks ({', '.join(cols)}) values ({', '.join('?' * len(cols))})", values
        )

    def create_many(self, tasks: builtins.list[dict]) -> None:
        """One transaction for a whole batch (one commit instead of one per task)."""
        if not tasks:
            return
        cols = [c for c in TASK_COLUMNS if c in tasks[0]]
        sql = f"insert into taskq_tasks ({', '.join(cols)}) values ({', '.join('?' * len(cols))})"
        rows = [[_to_db(c, task.get(c)) for c in cols] for task in tasks]
        with self._lock:
            self._conn.execute("begin immediate")
            try:
                self._conn.executemany(sql, rows)
            except BaseException:
                self._conn.execute("rollback")
                raise
            self._conn.execute("commit")

    def get(self, task_id: str) -> dict | None:
        rows = self._rows("select * from taskq_tasks where id = ?", (task_id,))
        return rows[0] if rows else None

    def list(self, statuses=None, limit=50, offset=0, ids=None, text=None, owner=None) -> builtins.list[dict]:
        where, params = _filters(statuses, ids, text, owner)
        return self._rows(
            f"select * from taskq_tasks {where} order by seq desc limit ? offset ?", [*params, limit, offset]
        )

    def statuses(self, ids) -> dict[str, str]:
        ids = list(ids)
        rows = self._read(f"select id, status from taskq_tasks where id in ({', '.join('?' * len(ids))})", ids)
        return {task_id: status for task_id, status in rows}

    def ended_times(self, ids) -> dict[str, float]:
        ids, ended = list(ids), {}
        for start in range(0, len(ids), 900):  # SQLite's bound parameters per statement
            part = ids[start:start + 900]
            rows = self._read(f"select id, ended_at from taskq_tasks where id in ({', '.join('?' * len(part))}) "
                              "and ended_at is not null", part)
            ended.update({task_id: at for task_id, at in rows})
        return ended

    def count(self, statuses=None, text=None, owner=None) -> int:
        where, params = _filters(statuses, None, text, owner)
        return self._read(f"select count(*) from taskq_tasks {where}", params)[0][0]

    def cell_counts(self, notebooks, owner=None) -> dict[str, dict[str, int]]:
        notebooks = list(notebooks)
        if not notebooks:
            return {}
        marks = ", ".join("?" * len(notebooks))
        sql = f"select cell_id, status, count(*) from taskq_tasks where notebook in ({marks}) and cell_id is not null"
        params = list(notebooks)
        if owner is not None:
            sql += " and owner = ?"
            params.append(owner)
        counts: dict[str, dict[str, int]] = {}
        for cell_id, status, n in self._read(sql + " group by cell_id, status", params):
            counts.setdefault(cell_id, {})[status] = n
        return counts

    def fingerprint(self) -> tuple:
        # Separate statements, so each max() is one index look-up (together they would scan the table).
        return tuple(self._read(sql)[0][0] for sql in (
            "select max(seq) from taskq_tasks", "select max(updated_at) from taskq_tasks",
            "select count(*) from taskq_tasks"))

    def counts_by_status(self) -> dict[str, int]:
        rows = self._read("select status, count(*) from taskq_tasks group by status")
        counts = {s.value: 0 for s in TaskStatus}
        counts.update({status: n for status, n in rows})
        return counts

    def waiting_heads(self, pools, statuses=WAITING, now=None) -> builtins.list[dict]:
        pools, waiting = list(pools), [str(s) for s in statuses]
        rows = self._read(
            "select id, owner, priority, created_at from (select id, owner, priority, created_at, row_number() "
            "over (partition by owner order by priority desc, seq) as n from taskq_tasks "
            f"where status in ({', '.join('?' * len(waiting))}) and pool in ({', '.join('?' * len(pools))}) "
            "and held = 0 and (status != 'RETRY' or coalesce(not_before, 0) <= ?)) where n = 1",
            [*waiting, *pools, time.time() if now is None else now])
        return [dict(r) for r in rows]

    def waiting_gpu_tasks(self, pools, now=None, limit=200) -> builtins.list[dict]:
        pools, waiting = list(pools), [str(s) for s in WAITING]
        rows = self._read(
            "select id, owner, priority, created_at, pool, gpu, timeout from taskq_tasks "
            f"where status in ({', '.join('?' * len(waiting))}) and pool in ({', '.join('?' * len(pools))}) "
            "and (status != 'RETRY' or coalesce(not_before, 0) <= ?) order by priority desc, seq limit ?",
            [*waiting, *pools, time.time() if now is None else now, limit])
        return [dict(r) for r in rows]

    def running_gpus_by_owner(self) -> dict[str | None, int]:
        rows = self._read("select owner, sum(gpu) from taskq_tasks where status = 'RUNNING' and gpu group by owner")
        return {owner: int(n) for owner, n in rows}

    def gpu_spans(self, since) -> builtins.list[tuple[str | None, float, float | None]]:
        rows = self._read(
            "select t.owner, a.started_at, a.ended_at, t.gpu from taskq_attempts a join taskq_tasks t "
            "on t.id = a.task_id where t.gpu and a.started_at is not null and (a.ended_at is null or a.ended_at >= ?) "
            "union all select owner, started_at, ended_at, coalesce(gpus, 1) from taskq_gpu_ledger where ended_at >= ?",
            (since, since))
        return [(owner, started, ended) for owner, started, ended, n in rows for _ in range(int(n or 1))]

    def counts_by_owner(self) -> dict[str | None, dict[str, int]]:
        rows = self._read("select owner, status, count(*) from taskq_tasks group by owner, status")
        counts: dict[str | None, dict[str, int]] = {}
        for owner, status, n in rows:
            counts.setdefault(owner, {})[status] = n
        return counts

    def waiting_by_pool(self) -> dict[str, int]:
        # The statuses as literals, so SQLite sees the partial index's condition; grouped by status too, so
        # the index hands the groups over in order (no sort).
        rows = self._read(f"select status, pool, count(*) from taskq_tasks where status in {_WAITING_SQL} "
                          "group by status, pool")
        waiting: dict[str, int] = {}
        for _status, pool, n in rows:
            waiting[pool] = waiting.get(pool, 0) + n
        return waiting

    def transition(self, task_id, to, only_from, attempt=None, **fields) -> bool:
        now = time.time()
        fields.setdefault("updated_at", now)
        if to in FINAL:
            fields.setdefault("ended_at", now)
        sets = ["status = ?"] + [f"{k} = ?" for k in fields]
        params: list[Any] = [str(to)] + [_to_db(k, v) for k, v in fields.items()]
        sources = [str(s) for s in only_from]
        sql = f"update taskq_tasks set {', '.join(sets)} where id = ? and status in ({', '.join('?' * len(sources))})"
        params += [task_id, *sources]
        if attempt is not None:
            sql += " and attempt = ?"
            params.append(attempt)
        with self._lock:
            moved = self._write(sql, params) == 1
            if moved and "RUNNING" in sources and str(to) != "RUNNING":  # the attempt ended
                error = fields.get("error")
                self._write(attempt_log.SQLITE_END, (now, str(to), attempt_log.exit_reason(str(to), error),
                                                     json.dumps(error) if error else None, task_id))
        return moved

    def claim(self, task_id, worker, worker_instance) -> dict | None:
        now = time.time()
        with self._lock:
            # A cancel is final: a task asked to cancel while it ran (and then requeued, or handed back) ends.
            self._conn.execute("update taskq_tasks set status = 'CANCELLED', ended_at = ?, updated_at = ?, error = ? "
                               "where id = ? and status in ('PENDING', 'RETRY') and cancel_requested = 1",
                               (now, now, json.dumps(CANCELLED_AT_CLAIM), task_id))
            rows = self._conn.execute(
                "update taskq_tasks set status = 'RUNNING', attempt = attempt + 1, worker = ?, "
                "worker_instance = ?, started_at = ?, updated_at = ?, cancel_requested = 0, outputs = null, "
                "progress = null "
                "where id = ? and status in ('PENDING', 'RETRY') and cancel_requested = 0 and held = 0 returning *",
                (worker, worker_instance, now, now, task_id),
            ).fetchall()  # to its end: a RETURNING statement commits only once it is done
            row = rows[0] if rows else None
            if row:
                self._conn.execute(attempt_log.SQLITE_START, (task_id, row["attempt"], worker, worker, now))
        return _row_to_task(row) if row else None

    def release(self, task_id, attempt) -> bool:
        with self._lock:
            released = self._write(
                "update taskq_tasks set status = 'PENDING', attempt = attempt - 1, worker = null, "
                "worker_instance = null, started_at = null, updated_at = ? "
                "where id = ? and status = 'RUNNING' and attempt = ?",
                (time.time(), task_id, attempt),
            ) == 1
            if released:  # handed back uncounted: no attempt happened
                self._write("delete from taskq_attempts where task_id = ? and attempt = ?", (task_id, attempt))
        return released

    def request_cancel(self, task_id) -> bool:
        return self._write(
            "update taskq_tasks set cancel_requested = 1, updated_at = ? where id = ? and status = 'RUNNING'",
            (time.time(), task_id),
        ) == 1

    def cancel_requested(self, task_id) -> bool:
        rows = self._read("select cancel_requested from taskq_tasks where id = ?", (task_id,))
        return bool(rows and rows[0][0])

    def update_fields(self, task_id, **fields) -> None:
        fields.setdefault("updated_at", time.time())
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._write(f"update taskq_tasks set {sets} where id = ?",
                    [*(_to_db(k, v) for k, v in fields.items()), task_id])

    def delete(self, task_id) -> bool:
        now = time.time()
        with self._lock:
            self._write(  # its GPU time still counts a while (fair share)
                "insert into taskq_gpu_ledger (owner, started_at, ended_at, gpus) "
                "select t.owner, a.started_at, coalesce(a.ended_at, ?), t.gpu from taskq_attempts a "
                "join taskq_tasks t on t.id = a.task_id where a.task_id = ? and t.gpu and a.started_at is not null "
                "and coalesce(a.ended_at, ?) >= ?", (now, task_id, now, now - USAGE_KEPT))
            self._write("delete from taskq_gpu_ledger where ended_at < ?", (now - USAGE_KEPT,))
            self._write("delete from taskq_attempts where task_id = ?", (task_id,))
            return self._write("delete from taskq_tasks where id = ?", (task_id,)) == 1

    def attempts(self, task_id) -> builtins.list[dict]:
        rows = self._read("select * from taskq_attempts where task_id = ? order by attempt", (task_id,))
        return [dict(r, error=json.loads(r["error"]) if r["error"] else None) for r in rows]

    def attempt_events(self, kind, since, limit) -> builtins.list[dict]:
        column = {"started": "a.started_at", "ended": "a.ended_at"}[kind]
        rows = self._read(
            "select a.task_id, a.attempt, a.device, a.started_at, a.ended_at, a.status, a.reason, t.pool, t.owner, "
            "t.created_at, t.gpu, t.ready_at from taskq_attempts a join taskq_tasks t on t.id = a.task_id "
            f"where {column} >= ? "
            f"order by {column} limit ?", (since, limit))
        return [dict(r) for r in rows]

    def running(self) -> builtins.list[dict]:
        return self._rows("select * from taskq_tasks where status = 'RUNNING'")

    def held(self, limit: int = 5000) -> builtins.list[dict]:
        return self._rows("select * from taskq_tasks where held = 1 and status = 'PENDING' order by seq limit ?",
                          (limit,))

    def overdue_waiting(self, now) -> builtins.list[str]:
        rows = self._read("select id from taskq_tasks where status in ('PENDING', 'RETRY') and expires_at is not null "
                          "and expires_at < ?", (now,))
        return [r[0] for r in rows]

    def results_older_than(self, ended_before) -> builtins.list[str]:
        rows = self._read("select id from taskq_tasks where result_expired = 0 and ended_at is not null "
                          "and ended_at < ? - coalesce(result_ttl, 0)", (ended_before,))
        return [r[0] for r in rows]

    def finished_before(self, ended_before, limit=5000) -> builtins.list[str]:
        final = [s.value for s in FINAL]
        marks = ", ".join("?" * len(final))
        rows = self._read(f"select id from taskq_tasks where status in ({marks}) and ended_at < ? "
                          "order by seq limit ?", [*final, ended_before, limit])
        return [r[0] for r in rows]

    def compact(self) -> bool:
        """After a purge: VACUUM once a quarter of the file (and at least 1 MiB) is free pages, and truncate
        the WAL (SQLite reuses it but never shrinks it), so the state directory shrinks back instead of
        keeping its largest size forever. True if it vacuumed."""
        with self._lock:
            page_size, pages, free = (self._conn.execute(f"pragma {p}").fetchone()[0]
                                      for p in ("page_size", "page_count", "freelist_count"))
            vacuum = free * 4 >= pages and free * page_size >= 1024 * 1024
            if vacuum:
                self._conn.execute("vacuum")
            self._conn.execute("pragma wal_checkpoint(TRUNCATE)")  # busy readers: it just does less
            return vacuum

    def blob_refs(self, key) -> int:
        return self._read("select count(*) from taskq_tasks where blob = ? and result_expired = 0", (key,))[0][0]

    def add_blob_owner(self, key, owner) -> bool:
        return self._write("insert or ignore into taskq_blob_owners (blob, owner) values (?, ?)", (key, owner)) == 1

    def blob_owned(self, key, owner) -> bool:
        return bool(self._read("select 1 from taskq_blob_owners where blob = ? and owner = ?", (key, owner)))

    def forget_blob(self, key) -> None:
        self._write("delete from taskq_blob_owners where blob = ?", (key,))

    def callbacks_due(self) -> builtins.list[str]:
        final = [s.value for s in FINAL]
        rows = self._read("select id from taskq_tasks where callback_url is not null and callback_done = 0 "
                          f"and status in ({', '.join('?' * len(final))})", final)
        return [r[0] for r in rows]

    # -- task tokens --------------------------------------------------------
    def add_task_token(self, digest, task_id, attempt, owner) -> None:
        self._write("insert or replace into taskq_task_tokens (digest, task_id, attempt, owner, created_at) "
                    "values (?, ?, ?, ?, ?)", (digest, task_id, attempt, owner, time.time()))

    def task_token(self, digest) -> dict | None:
        rows = self._read("select task_id, attempt, owner from taskq_task_tokens where digest = ?", (digest,))
        return dict(rows[0]) if rows else None

    def delete_task_token(self, digest) -> None:
        self._write("delete from taskq_task_tokens where digest = ?", (digest,))

    # -- workers ----------------------------------------------------------
    def register_worker(self, worker: dict) -> None:
        cols = list(worker)
        self._write(
            f"insert or replace into taskq_workers ({', '.join(cols)}) values ({', '.join('?' * len(cols))})",
            [worker[c] for c in cols],
        )

    def heartbeat(self, name, instance, state, current_task, warm=None, gpus=None) -> bool | tuple[str, ...]:
        with self._lock:
            asked = self._conn.execute("select drop_warm, drop_warm_owners from taskq_workers where name = ? and "
                                       "instance = ?", (name, instance)).fetchone()
            self._conn.execute(
                "update taskq_workers set heartbeat_at = ?, state = ?, current_task = ?, warm = ?, gpus = ?, "
                "drop_warm = 0, drop_warm_owners = null where name = ? and instance = ?",
                (time.time(), state, current_task, json.dumps(warm or []), gpus, name, instance),
            )
        if asked is None:
            return False
        return True if asked[0] else tuple(json.loads(asked[1] or "[]")) or False

    def request_drop_warm(self, owner=None) -> int:
        if owner is None:
            return self._write("update taskq_workers set drop_warm = 1")
        with self._lock:  # add ``owner`` to each worker's list (a few workers: read, then write)
            rows = self._conn.execute("select name, drop_warm_owners from taskq_workers").fetchall()
            for name, raw in rows:
                owners = sorted(set(json.loads(raw or "[]")) | {owner})
                self._conn.execute("update taskq_workers set drop_warm_owners = ? where name = ?",
                                   (json.dumps(owners), name))
        return len(rows)

    def workers(self) -> builtins.list[dict]:
        return [dict(r) for r in self._read("select * from taskq_workers order by name")]

    def remove_worker(self, name, instance=None) -> None:
        if instance is None:
            self._write("delete from taskq_workers where name = ?", (name,))
        else:
            self._write("delete from taskq_workers where name = ? and instance = ?", (name, instance))


def _set_wal(conn: sqlite3.Connection, timeout: float) -> None:
    # Switching a new database to WAL needs a write lock; retry while another process holds it.
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("pragma journal_mode=wal")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _filters(statuses, ids, text=None, owner=None) -> tuple[str, list]:
    clauses, params = [], []
    if owner is not None:
        clauses.append("owner = ?")
        params.append(owner)
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clauses.append("(name like ? escape '\\' or id like ? escape '\\')")
        params += [pattern, pattern]
    if statuses:
        statuses = [str(s) for s in statuses]
        clauses.append(f"status in ({', '.join('?' * len(statuses))})")
        params += statuses
    if ids is not None:
        ids = list(ids)
        clauses.append(f"id in ({', '.join('?' * len(ids))})" if ids else "0")
        params += ids
    return ("where " + " and ".join(clauses) if clauses else ""), params


def _to_db(column: str, value: Any) -> Any:
    if column in JSON_COLUMNS and value is not None and not isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, TaskStatus):
        return value.value
    return value


def _row_to_task(row: sqlite3.Row) -> dict:
    task = dict(row)
    task.pop("seq", None)
    for column in JSON_COLUMNS:
        if task.get(column):
            task[column] = json.loads(task[column])
    return task
