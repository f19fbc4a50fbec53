"""How the service refuses: :class:`ServiceError` carries its HTTP status and a message saying what was wrong,
so a client never sees a bare 500 for bad input."""

from __future__ import annotations

from .status import TaskStatus


class ServiceError(Exception):
    def __init__(self, status: int, message: str, reason: str = "bad request"):
        super().__init__(message)
        self.status = status
        self.reason = reason


def bad_request(message: str) -> ServiceError:
    return ServiceError(400, message, "bad request")


def not_found(task_id: str) -> ServiceError:
    return ServiceError(404, f"no task with id {task_id!r}", "not found")


def conflict(message: str) -> ServiceError:
    return ServiceError(409, message, "conflict")


def lost(task_id: str) -> dict:
    """What is reported for an id the store does not have: said plainly, never ``status: null``."""
    return {"id": task_id, "name": None, "status": TaskStatus.LOST.value,
            "error": {"type": "TaskLost", "traceback": None,
                      "message": f"the queue has no task {task_id}: it was deleted, or lost (e.g. a Redis "
                                 "server restarted without persistence)"}}
