"""``GET tasks/<id>/attempts``: the task's attempt history (see :mod:`jupyter_taskq.attempts`)."""

from __future__ import annotations

from .service import ServiceError, iso


def attempts_json(service, task_id: str) -> dict:
    """Oldest first, times in ISO 8601 like the task's own; 404 for a task that does not exist.
    ``log_size``: the bytes that attempt printed (its own log: ``GET tasks/<id>/logs?attempt=N``)."""
    task = service.get_task(task_id)
    return {"task_id": task_id, "attempts": [
        {**entry, "started_at": iso(entry.get("started_at")), "ended_at": iso(entry.get("ended_at")),
         "log_size": _log_size(service, task, entry["attempt"])}
        for entry in service.store.attempts(task_id)]}


def _log_size(service, task: dict, attempt: int) -> int | None:
    try:
        return service.log_size(task, attempt)
    except ServiceError:  # a record newer than the task row read just before: its size comes next time
        return None
