"""Attempt history: every attempt of a task keeps its own worker, device, start, end, exit reason and error.

A task row holds only its latest attempt; a task retried after a lost worker, a timeout or a
memory kill used to forget why its earlier attempts ended. The stores now write one attempt
record when a worker claims the task and close it when the task leaves RUNNING (the same
calls that move the task, so no caller has to remember), and drop it when a worker shutdown
hands the attempt back uncounted (``release``). ``GET tasks/<id>/attempts`` lists them.
"""

from __future__ import annotations

from typing import Any

#: Exit reasons by the error type the worker, the recovery sweep or the limits module report.
_REASONS = {
    "Timeout": "timeout",
    "WorkerLost": "worker lost",
    "MemoryLimitExceeded": "memory",
    "Cancelled": "cancelled",
    "Interrupted": "interrupted",
    "Crashed": "crashed",
}

SQLITE_SCHEMA = """
create table if not exists taskq_attempts (
    task_id text not null, attempt integer not null, worker text, device text,
    started_at real, ended_at real, status text, reason text, error text,
    primary key (task_id, attempt)
);
create index if not exists taskq_attempts_started on taskq_attempts (started_at);
create index if not exists taskq_attempts_ended on taskq_attempts (ended_at);
"""

#: What :meth:`TaskStore.attempt_events` returns per attempt: the attempt's record with its task's pool,
#: owner, creation time and GPU flag (what the Prometheus metrics label and measure, server/metrics.py).
EVENT_FIELDS = ("task_id", "attempt", "device", "started_at", "ended_at", "status", "reason",
                "pool", "owner", "created_at", "gpu", "ready_at")
#: The two kinds of event: an attempt that started, an attempt that ended (each read in time order).
EVENT_KINDS = ("started", "ended")

#: Opens the record of a claimed attempt; the device is read from the worker's own record.
SQLITE_START = """
insert or replace into taskq_attempts (task_id, attempt, worker, device, started_at)
values (?, ?, ?, (select case when pool = 'gpu' then 'GPU ' || coalesce(device, '?') || coalesce(' · ' || model, '')
                  else 'CPU' end from taskq_workers where name = ?), ?)
"""

#: Closes the open record of a task that left RUNNING.
SQLITE_END = """
update taskq_attempts set ended_at = ?, status = ?, reason = ?, error = ?
where task_id = ? and ended_at is null
"""


def exit_reason(status: str, error: dict | None) -> str:
    """complete, error, timeout, worker lost, memory, cancelled, interrupted or crashed."""
    if status == "COMPLETE":
        return "complete"
    kind = (error or {}).get("type")
    if kind in _REASONS:
        return _REASONS[kind]
    return {"TIMEOUT": "timeout", "CANCELLED": "cancelled"}.get(status, "error")


def device_label(worker: dict | None) -> str | None:
    """'CPU', or 'GPU 0 · A100' (the same words as the panel's worker tiles)."""
    if not worker:
        return None
    if worker.get("pool") != "gpu":
        return "CPU"
    label = f"GPU {worker.get('device') if worker.get('device') is not None else '?'}"
    return f"{label} · {worker['model']}" if worker.get("model") else label


def record(task_id: str, attempt: int, worker: str | None, device: str | None, started_at: float | None,
           ended_at: float | None = None, status: str | None = None, reason: str | None = None,
           error: Any = None) -> dict:
    return {"task_id": task_id, "attempt": attempt, "worker": worker, "device": device, "started_at": started_at,
            "ended_at": ended_at, "status": status, "reason": reason, "error": error}
