"""Catching what Huey cannot: attempts whose worker died, and tasks that waited too long.

Huey removes a message when a worker dequeues it, so a worker that dies mid-task
takes the task with it. Our store still says RUNNING, with the worker instance
that claimed it. A task is lost when that instance no longer heartbeats (or a new
instance of the same worker has registered): it is put back as a new attempt at its
place in the queue, or FAILED with "worker lost" once its retries are spent. Every step is a conditional
transition, so the server and the worker supervisor may both run this safely.

At most one copy of a task runs. A silent worker is not always a dead one (stopped, swapping, blocked
on a lock), so an attempt is requeued only once its old copy cannot go on: a worker of this machine
whose process still exists is left alone here (its supervisor kills it first: worker/supervisor.py);
another machine's worker cannot be looked at, and there the attempt number fences it (every write of
a status, progress or outputs names the attempt, so a late one of a superseded attempt is refused and
its worker ends it). A cancel is final: a lost attempt whose task was asked to cancel ends CANCELLED,
never requeued, and a worker that dequeues a task asked to cancel ends it instead of running it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from .instances import alive_here
from .options import stored_problem
from .backends.hueyqueue import enqueue_attempt
from .status import CANCELLABLE, WAITING, TaskStatus
from .backends.taskstore import TaskStore, retry_delay_for
from .storeerrors import is_storage_error

log = logging.getLogger("jupyter_taskq.recovery")


FORGET_WORKER_AFTER = 600.0  # a worker silent this long (a machine gone for good) leaves the stats
#: The error of an attempt asked to cancel whose worker stopped answering (and was ended, or is fenced).
CANCELLED_WHILE_LOST = {"type": "Cancelled", "traceback": None,
                        "message": "cancelled while running (its worker stopped answering and was ended)"}


def fail_bad_task(store: TaskStore, task: dict, reason: str) -> bool:
    """A stored task that cannot be run (a value from before the checks, a damaged row) is FAILED with
    the reason, logged once, and never stops the start-up or the sweep that found it."""
    log.error("jupyter-taskq: task %s cannot be run and is FAILED: %s", task.get("id"), reason)
    error = {"type": "InvalidTask", "message": f"the stored task cannot be run: {reason}", "traceback": None}
    return store.transition(task["id"], TaskStatus.FAILED, CANCELLABLE, error=error)


def place_priority(task: dict) -> float:
    """The queue priority that gives an interrupted attempt's task back its place: ahead of every task of
    its priority submitted after it (and behind those submitted before it), below every higher priority.

    Priorities are integers; the fraction added (under 0.5) shrinks with the submission time.
    """
    return task["priority"] + 0.5 - (task.get("created_at") or 0) * 1e-10


def retry_or_fail(store: TaskStore, task: dict, error: dict, retry: bool = True,
                  keep_place: bool = False) -> TaskStatus | None:
    """The first half of ending an attempt that failed or was lost: RETRY while retries remain (and
    ``retry``), else FAILED. Only if that attempt is still RUNNING; None if it was not.

    A RETRY records ``not_before``, when the delay :func:`requeue_attempt` gives its next attempt ends
    (now, for ``keep_place``): under fair share any turn may start a waiting task, so the store must know."""
    retries_left = task["max_retries"] + 1 - task["attempt"]
    status = TaskStatus.RETRY if retry and retries_left > 0 else TaskStatus.FAILED
    fields = {"not_before": time.time() + (0.0 if keep_place else retry_delay_for(task))} \
        if status is TaskStatus.RETRY else {}
    if store.transition(task["id"], status, [TaskStatus.RUNNING], attempt=task["attempt"], error=error, **fields):
        return status
    return None


def requeue_attempt(queue, task: dict, keep_place: bool = False) -> None:
    """The second half, after RETRY: queue the next attempt. A failed attempt waits ``retry_delay`` (with
    backoff) and goes behind its priority's queue; an interrupted one (its worker stopped or died) is
    queued at once at its place (:func:`place_priority`), so a restart does not reorder the queue."""
    enqueue_attempt(
        queue, task["id"], retries=max(0, task["max_retries"] - task["attempt"]),
        retry_delay=task["retry_delay"], retry_backoff=task["retry_backoff"],
        priority=place_priority(task) if keep_place else task["priority"],
        delay=None if keep_place else retry_delay_for(task),
    )


def fail_or_requeue(store: TaskStore, queues: Mapping, task: dict, error: dict,
                    keep_place: bool = False) -> TaskStatus | None:
    """End a RUNNING attempt that did not finish by itself: RETRY with a new attempt queued, or FAILED."""
    problem = stored_problem(task)
    if problem:
        return TaskStatus.FAILED if fail_bad_task(store, task, problem) else None
    status = retry_or_fail(store, task, error, keep_place=keep_place)
    if status is TaskStatus.RETRY:
        try:
            requeue_attempt(queues[task["pool"]], task, keep_place)
        except Exception as exc:  # noqa: BLE001 - a row no check foresaw: fail it, keep sweeping
            if is_storage_error(exc):
                raise  # not the task's fault (a full disk, Redis down): the caller tries again
            return TaskStatus.FAILED if fail_bad_task(store, task, f"{type(exc).__name__}: {exc}") else None
    return status


def recover_lost_tasks(store: TaskStore, queues: Mapping, stale_after: float,
                       on_change: Callable[[str], None] = lambda task_id: None) -> list[str]:
    now = time.time()
    workers = {w["name"]: w for w in store.workers()}
    changed = []
    for task in store.running():
        worker = workers.get(task["worker"])
        alive = (
            worker is not None
            and worker["instance"] == task["worker_instance"]
            and (worker["heartbeat_at"] or 0) >= now - stale_after
        )
        if alive or alive_here(task["worker_instance"]):
            continue  # silent but not dead: its supervisor ends it, then the next sweep comes back to it
        if task.get("cancel_requested"):
            if store.transition(task["id"], TaskStatus.CANCELLED, [TaskStatus.RUNNING], attempt=task["attempt"],
                                error=CANCELLED_WHILE_LOST):
                changed.append(task["id"])
                on_change(task["id"])
            continue
        error = {
            "type": "WorkerLost",
            "message": f"worker lost: {task['worker']} stopped while running attempt {task['attempt']}",
            "traceback": None,
        }
        moved: TaskStatus | bool | None  # the status it moved to, or whether a damaged row was failed
        try:
            moved = fail_or_requeue(store, queues, task, error, keep_place=True)
        except Exception as exc:  # noqa: BLE001 - one damaged row never stops the sweep
            if is_storage_error(exc):
                raise  # the store itself fails: the next sweep tries again
            moved = fail_bad_task(store, task, f"{type(exc).__name__}: {exc}")
        if moved:
            changed.append(task["id"])
            on_change(task["id"])
    forget_before = now - max(FORGET_WORKER_AFTER, stale_after)
    for worker in workers.values():
        if (worker["heartbeat_at"] or 0) < forget_before:
            store.remove_worker(worker["name"], worker["instance"])
    return changed


def expire_overdue_tasks(store: TaskStore, on_change: Callable[[str], None] = lambda task_id: None) -> list[str]:
    expired = []
    for task_id in store.overdue_waiting(time.time()):
        error = {"type": "Expired", "message": "not started before its expiry time", "traceback": None}
        if store.transition(task_id, TaskStatus.EXPIRED, WAITING, error=error):
            expired.append(task_id)
            on_change(task_id)
    return expired
