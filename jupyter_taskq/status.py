"""The eight task statuses (Beam's, exactly), LOST (reported, never stored), and the sets the queue reasons with."""

from __future__ import annotations

import enum


class TaskStatus(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    RETRY = "RETRY"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    EXPIRED = "EXPIRED"
    FAILED = "FAILED"
    #: Never stored: what ``tasks/wait`` (and the client) report for an id the queue does not know, a task
    #: deleted or lost (a Redis restarted without persistence), so that is said rather than ``status: null``.
    LOST = "LOST"

    def __str__(self) -> str:  # so f"{status}" reads "RUNNING", not "TaskStatus.RUNNING"
        return self.value

    @property
    def is_final(self) -> bool:
        return self in FINAL

    @property
    def is_waiting(self) -> bool:
        return self in WAITING


#: Waiting for a worker: cancelling one of these means it never runs.
WAITING = frozenset({TaskStatus.PENDING, TaskStatus.RETRY})
#: Nothing more will happen to a task in one of these.
FINAL = frozenset(
    {
        TaskStatus.COMPLETE,
        TaskStatus.CANCELLED,
        TaskStatus.TIMEOUT,
        TaskStatus.EXPIRED,
        TaskStatus.FAILED,
        TaskStatus.LOST,
    }
)
#: A task in one of these can still be cancelled.
CANCELLABLE = WAITING | {TaskStatus.RUNNING}
