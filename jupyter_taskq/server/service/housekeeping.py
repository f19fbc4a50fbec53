"""Keeping the queue in order: re-queueing after a crash, cancelling, deleting, and the TTL sweeps.

Part of :class:`~.TaskService` (a mixin of it: its methods use the service's store, queues and state).
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from typing import Any

from ... import options as options_module
from ...backends.hueyqueue import enqueue_attempt
from ...recovery import fail_bad_task
from ...status import CANCELLABLE, FINAL, WAITING, TaskStatus
from ...storeerrors import with_reserve
from .base import ServiceParts
from ...serviceerrors import ServiceError, bad_request, conflict

log = logging.getLogger("jupyter_taskq.service")
CANCEL_CHUNK = 1000  # tasks cancelled per transaction (the store's writer is held that long)


class Housekeeping(ServiceParts):
    """Start-up reconciliation, cancel and delete, warm processes dropped, results and records past their TTL."""

    def reconcile(self) -> list[str]:
        """Queue again any waiting task that has no Huey message (a crash between two writes).

        Runs at every start, over rows written by any earlier version: a row that cannot be queued
        (a value out of range, an unknown pool) is FAILED with the reason and logged, never fatal."""
        queued = set()
        for pool in self.store.waiting_by_pool():
            try:
                self.queues[pool]  # open the queue of every pool with waiting tasks (GPU models' too)
            except Exception:  # noqa: BLE001 - its tasks are failed one by one below
                pass
        for huey in list(self.queues.values()):
            try:
                for message in [*huey.pending(), *huey.scheduled()]:
                    if message.args:
                        queued.add(message.args[0])
            except Exception:  # noqa: BLE001 - an unreadable message: re-queue rather than lose
                log.exception("jupyter-taskq: could not read the queue %s at start-up", getattr(huey, "name", "?"))
        requeued = []
        offset = 0
        while True:
            batch = self.store.list(WAITING, limit=1000, offset=offset)
            if not batch:
                break
            offset += len(batch)
            for task in batch:
                problem = options_module.stored_problem(task)
                if problem:
                    if fail_bad_task(self.store, task, problem):
                        self.on_change(task["id"])
                        offset -= 1  # no longer waiting: the next page starts one earlier
                    continue
                if task["id"] in queued or task.get("held"):  # held: release_held queues it when it may start
                    continue
                try:
                    enqueue_attempt(self.queues[task["pool"]], task["id"],
                                    retries=max(0, task["max_retries"] - task["attempt"]),
                                    retry_delay=task["retry_delay"], retry_backoff=task["retry_backoff"],
                                    priority=task["priority"], expires_at=task["expires_at"])
                    self._bells[task["pool"]].ring()
                except Exception as exc:  # noqa: BLE001 - never fatal: fail this one, start the rest
                    if fail_bad_task(self.store, task, f"{type(exc).__name__}: {exc}"):
                        self.on_change(task["id"])
                        offset -= 1
                    continue
                requeued.append(task["id"])
        return requeued

    def cancel(self, task_ids: Any) -> dict:
        if not isinstance(task_ids, list) or not all(isinstance(i, str) for i in task_ids):
            raise bad_request('"task_ids" must be a list of task id strings')
        cancelled, not_cancelled = [], []
        ids = list(dict.fromkeys(task_ids))
        for start in range(0, len(ids), CANCEL_CHUNK):
            chunk = ids[start:start + CANCEL_CHUNK]
            outcomes = with_reserve(self.state.root, functools.partial(self._cancel_chunk, chunk))
            for task_id, outcome in outcomes.items():
                if outcome is None:
                    cancelled.append(task_id)
                    self.on_change(task_id)
                else:
                    not_cancelled.append({"id": task_id, "reason": outcome})
        return {"cancelled": cancelled, "not_cancelled": not_cancelled}

    def _cancel_chunk(self, ids: list[str]) -> dict[str, str | None]:
        """Cancel ``ids`` as one write. A cancel stops work, so it must work on a full state disk (the user
        stopping a flood before deleting anything): one transaction writes each page once (a status write
        per task would need room for each), and the caller runs it with the reserve, as a delete."""
        with self.store.batch():
            return {task_id: self._cancel_one(task_id) for task_id in ids}

    def _cancel_one(self, task_id: str) -> str | None:
        """None when cancelled (or being killed); otherwise why not."""
        for _ in range(3):  # the status may move under us (a worker claims it): look again
            task = self.store.get(task_id)
            if task is None:
                return "no such task"
            status = TaskStatus(task["status"])
            if status not in CANCELLABLE:
                return f"already {status}"
            if status in WAITING:
                error = {"type": "Cancelled", "message": "cancelled before it ran", "traceback": None}
                if self.store.transition(task_id, TaskStatus.CANCELLED, WAITING, error=error):
                    return None
            elif self.store.request_cancel(task_id):
                return None  # the worker kills the attempt within a second and records CANCELLED
        return "its status kept changing; try again"

    def delete(self, task_id: str) -> None:
        task = self.get_task(task_id)
        if task["status"] not in FINAL:
            raise conflict(f"task {task_id} is {task['status']}; cancel it before deleting it")
        self._remove_files(task_id)  # first: on a full disk, the space they free lets the row go
        with_reserve(self.state.root, lambda: self.store.delete(task_id))
        self.blobs.release(task.get("blob"))  # the shared part goes with the last task that names it
        self.on_change(task_id)

    def drop_warm(self, owner: str | None = None) -> dict:
        """Every worker ends its warm task processes (keep_warm_seconds; ``owner``: only those of that owner's
        tasks) within a heartbeat (about 1 s)."""
        return {"workers_asked": self.store.request_drop_warm(owner)}

    def purge_old_records(self, record_ttl: float) -> int:
        """Delete the records of tasks that ended more than ``record_ttl`` seconds ago (as ``DELETE`` would),
        then let the store give the space back; 0 keeps records forever."""
        if not record_ttl:
            return 0
        purged = 0
        for task_id in self.store.finished_before(time.time() - record_ttl):
            try:
                self.delete(task_id)
                purged += 1
            except ServiceError:  # deleted meanwhile, or retried into a new status: nothing to purge
                pass
        if purged:
            self.store.compact()
            self._disk_usage = None
        return purged

    def expire_old_results(self) -> int:
        """Remove results, payloads, logs and outputs past their TTL; the task record stays, marked expired."""
        ids = self.store.results_older_than(time.time())
        blobs = {t["blob"] for i in range(0, len(ids), 500)
                 for t in self.store.list(None, limit=500, ids=ids[i:i + 500])}
        for task_id in ids:
            self._remove_files(task_id)
            self.store.update_fields(task_id, result_expired=1)
            self.on_change(task_id)
        for key in blobs:
            self.blobs.release(key)
        self.blobs.sweep()  # blobs uploaded but never named by a task
        self._disk_usage = None
        return len(ids)

    def _remove_files(self, task_id: str) -> None:
        for path in self.state.task_files(task_id):
            path.unlink(missing_ok=True)
            self.objects.remove(path)
        shutil.rmtree(self.state.outputs(task_id), ignore_errors=True)
        self.objects.remove(self.state.outputs(task_id))
