"""The eight task statuses (Beam's, exactly) and the sets the queue reasons with."""

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
    }
)
#: A task in one of these can still be cancelled.
CANCELLABLE = WAITING | {TaskStatus.RUNNING}
