"""The task state users see, behind one small storage contract (:class:`TaskStore`).

Huey holds the queue; a task store holds what Huey does not: each task's status,
attempts, timings, worker, error and progress, and the workers' heartbeats. Every
change of status is conditional (``... WHERE status IN (...)`` in SQLite, one Lua
script in Redis), so two processes racing on a task (a worker claiming it while the
server cancels it, two reapers) can never both win. This module is the contract and
the column list every store shares; each backend's store is one class
(``sqlite_store.py``, ``redis_store.py``, ``memory.py``), checked by
``tests/test_store_contract.py``.
"""

from __future__ import annotations

import builtins
import abc
import contextlib
import math
import time
from typing import Any
from collections.abc import Iterable

from ..options import MAX_RETRY_WAIT
from ..status import WAITING, TaskStatus

#: Columns holding JSON text.
JSON_COLUMNS = _JSON_COLUMNS = ("error", "progress", "outputs", "callback", "retry_for", "seed", "limits", "image",
                                "environment", "waiting_for_gpus", "depends_on", "waiting_for")

TASK_COLUMNS = (
    "id", "name", "status", "pool", "gpu", "created_at", "started_at", "ended_at", "updated_at",
    "attempt", "max_retries", "retry_delay", "retry_backoff", "timeout", "expires", "expires_at",
    "priority", "callback_url", "worker", "worker_instance", "error", "progress", "cancel_requested",
    "retry_of", "result_ttl", "result_size", "result_expired", "outputs", "log_dropped", "callback", "callback_done",
    "keep_warm_seconds", "cpu", "memory", "retry_for",  # task options of issue 11 (jupyter_taskq/options.py)
    "blob",  # the sha256 of the shared part its payload names (jupyter_taskq/blobs.py), or None
    "notebook", "cell_id",  # where the task was submitted from (issue 14; jupyter_taskq/options.py)
    "owner",  # who submitted it: the server's authenticated user, never a name the client sends (issue 15)
    "limits",  # how its worker holds its cpu= and memory= ({"enforced", "memory", "cpu"}: worker/cgroups.py)
    "not_before",  # a task in RETRY: when its retry_delay is over (fair share must not start it sooner)
    "seed",  # the seeds its payload carries, per random library (jupyter_taskq/seeds.py): JSON
    "image",  # the image spec it asked for (jupyter_taskq/image.py): JSON
    "environment",  # what its image resolved to: {"hash", "packages", "python"} (worker/images.py): JSON
    "waiting_for_gpus",  # a waiting gpu=N task: what its machine's GPUs are busy with (jupyter_taskq/gangplan.py): JSON
    # issue 24 (jupyter_taskq/conditions.py): a held task is PENDING with no queue message until the
    # tasks it depends on are COMPLETE and its start time has come; the server's sweep releases it.
    "held", "depends_on", "waiting_for", "after_any_outcome", "start_at",
    "schedule_id",  # the schedule whose run it is (jupyter_taskq/server/schedules.py), or None
    "ready_at",  # a held task: when it could start (its start time, its last dependency's end); its queue wait's start
)

#: Seconds the GPU time of a deleted task still counts (fair share, "this week" in stats).
USAGE_KEPT = 8 * 86400.0

#: What a task reads as for a field never written (the SQLite schema's defaults).
TASK_DEFAULTS = {column: None for column in TASK_COLUMNS} | {
    "gpu": 0, "attempt": 0, "max_retries": 3, "retry_delay": 0, "retry_backoff": 1, "priority": 0,
    "cancel_requested": 0, "result_expired": 0, "log_dropped": 0, "callback_done": 0, "held": 0,
    "after_any_outcome": 0,
}


#: The error of a task asked to cancel that a worker dequeued again (claim ends it instead of running it).
CANCELLED_AT_CLAIM = {"type": "Cancelled", "message": "cancelled while running; not run again", "traceback": None}


def retry_delay_for(task: dict) -> float:
    """Delay before the attempt after ``task['attempt']``, with backoff."""
    backoff = task.get("retry_backoff") or 1
    try:
        delay = (task.get("retry_delay") or 0) * backoff ** max(0, task["attempt"] - 1)
    except OverflowError:
        delay = MAX_RETRY_WAIT
    return min(delay, MAX_RETRY_WAIT) if delay == delay else 0.0


def stored_not_before(task: dict) -> float | None:
    """``not_before`` of a task that went into RETRY before the store had that field: its delay counted from
    when it went into RETRY (its ``updated_at``), as its Huey message was scheduled then. None for a row
    with values no version wrote (the start-up checks fail it, saying why)."""
    try:
        not_before = float(task.get("updated_at") or 0.0) + retry_delay_for(task)
    except (TypeError, ValueError, OverflowError):
        return None
    return not_before if math.isfinite(not_before) else None


def may_start(task: dict, now: float) -> bool:
    """A waiting task may start now: PENDING, or RETRY with its retry delay over."""
    if task.get("held"):
        return False  # waiting for its dependencies or its start time (jupyter_taskq/conditions.py)
    return task["status"] != TaskStatus.RETRY.value or (task.get("not_before") or 0) <= now


class TaskStore(abc.ABC):
    """What the server, the workers and the reaper need from task state."""

    @abc.abstractmethod
    def create(self, task: dict) -> None: ...

    def create_many(self, tasks: builtins.list[dict]) -> None:
        for task in tasks:
            self.create(task)

    @abc.abstractmethod
    def get(self, task_id: str) -> dict | None: ...

    @contextlib.contextmanager
    def batch(self):
        """The writes made inside commit together, or (on an error) none of them. Here each as it is made;
        SQLite makes them one transaction."""
        yield

    @abc.abstractmethod
    def list(self, statuses: Iterable[str] | None = None, limit: int = 50, offset: int = 0,
             ids: Iterable[str] | None = None, text: str | None = None,
             owner: str | None = None) -> builtins.list[dict]:
        """Newest first; ``text`` keeps tasks whose name or id contains it (case-insensitive), ``owner``
        only that user's tasks."""

    @abc.abstractmethod
    def statuses(self, ids: Iterable[str]) -> dict[str, str]:
        """The status of each of ``ids`` that exists (the cheap check behind long-polls)."""

    def ended_times(self, ids: Iterable[str]) -> dict[str, float]:
        """When each of ``ids`` that exists and has ended ended (a held task's release time, server/pipelines.py)."""
        tasks = (self.get(task_id) for task_id in ids)
        return {t["id"]: t["ended_at"] for t in tasks if t and t.get("ended_at") is not None}

    @abc.abstractmethod
    def count(self, statuses: Iterable[str] | None = None, text: str | None = None,
              owner: str | None = None) -> int: ...

    # -- per owner (issue 15: fair share and quotas, jupyter_taskq/fairshare.py) ----------------------
    # Plain defaults over list(), right for any store; SQLite answers each in one query.
    def waiting_heads(self, pools: Iterable[str], statuses: Iterable[TaskStatus] = WAITING,
                      now: float | None = None) -> builtins.list[dict]:
        """Each owner's next waiting task in ``pools`` that may start now (highest priority, then oldest):
        ``{id, owner, priority, created_at}``. A task in RETRY whose ``not_before`` (the end of its
        retry_delay) is later than ``now`` (default: the current time) is not one: it may not start yet."""
        pools = set(pools)
        heads: dict[str | None, dict] = {}
        now = time.time() if now is None else now
        for task in reversed(self._all(list(statuses))):  # oldest first: the first seen of a priority stays
            if task["pool"] in pools and may_start(task, now):
                best = heads.get(task["owner"])
                if best is None or (task["priority"] or 0) > best["priority"]:
                    heads[task["owner"]] = {"id": task["id"], "owner": task["owner"], "priority": task["priority"] or 0,
                                            "created_at": task["created_at"]}
        return list(heads.values())

    def waiting_gpu_tasks(self, pools: Iterable[str], now: float | None = None,
                          limit: int = 200) -> builtins.list[dict]:
        """The first ``limit`` waiting tasks of ``pools`` that may start now, highest priority then oldest:
        ``{id, owner, priority, created_at, pool, gpu, timeout}`` (the gang planner's candidates)."""
        pools, now = set(pools), time.time() if now is None else now
        found = [t for t in reversed(self._all([str(s) for s in WAITING])) if t["pool"] in pools and may_start(t, now)]
        found.sort(key=lambda t: -(t["priority"] or 0))  # stable: oldest first within a priority
        return [{k: t[k] for k in ("id", "owner", "priority", "created_at", "pool", "gpu", "timeout")}
                for t in found[:limit]]

    def running_gpus_by_owner(self) -> dict[str | None, int]:
        """GPUs each owner's running tasks hold now (a gpu=N task holds N)."""
        held: dict[str | None, int] = {}
        for task in self.running():
            if task["gpu"]:
                held[task["owner"]] = held.get(task["owner"], 0) + int(task["gpu"])
        return held

    def gpu_spans(self, since: float) -> builtins.list[tuple[str | None, float, float | None]]:
        """``(owner, started_at, ended_at or None while running)`` of each GPU attempt that ran after ``since``,
        deleted tasks' too (for ``USAGE_KEPT``): deleting finished tasks must not reset a user's fair share.
        An attempt of a gpu=N task is there N times: each of its GPU-seconds counts."""
        spans = self._deleted_spans(since)
        for task in self._all(None):
            if task["gpu"] and (task["ended_at"] is None or task["ended_at"] >= since):  # not final: maybe a retry's
                for attempt in self.attempts(task["id"]) or [task]:
                    if attempt.get("started_at") and (attempt.get("ended_at") is None or attempt["ended_at"] >= since):
                        spans += [(task["owner"], attempt["started_at"], attempt.get("ended_at"))] * int(task["gpu"])
        return spans

    def _deleted_spans(self, since: float) -> builtins.list[tuple[str | None, float, float | None]]:
        return []

    def counts_by_owner(self) -> dict[str | None, dict[str, int]]:
        """Tasks by status for each owner."""
        counts: dict[str | None, dict[str, int]] = {}
        for task in self._all(None):
            mine = counts.setdefault(task["owner"], {})
            mine[task["status"]] = mine.get(task["status"], 0) + 1
        return counts

    def cell_counts(self, notebooks: Iterable[str], owner: str | None = None) -> dict[str, dict[str, int]]:
        """Tasks by status for each cell of the notebooks recorded as any of ``notebooks`` (issue 14's cell
        marks: every task of one notebook, however many newer ones the queue holds), ``owner``'s only if
        given. A plain default over list(); both stores answer from an index, O(that notebook's tasks)."""
        wanted = set(notebooks)
        counts: dict[str, dict[str, int]] = {}
        for task in self._all(None):
            if task.get("notebook") in wanted and task.get("cell_id") and (owner is None or task["owner"] == owner):
                cell = counts.setdefault(task["cell_id"], {})
                cell[task["status"]] = cell.get(task["status"], 0) + 1
        return counts

    def _all(self, statuses) -> builtins.list[dict]:
        tasks, offset = [], 0
        while page := self.list(statuses, limit=1000, offset=offset):
            tasks += page
            offset += len(page)
        return tasks

    @abc.abstractmethod
    def fingerprint(self) -> tuple:
        """A cheap value that changes whenever any task is added, removed or updated."""

    @abc.abstractmethod
    def counts_by_status(self) -> dict[str, int]: ...

    @abc.abstractmethod
    def waiting_by_pool(self) -> dict[str, int]: ...

    @abc.abstractmethod
    def transition(self, task_id: str, to: TaskStatus, only_from: Iterable[TaskStatus],
                   attempt: int | None = None, **fields: Any) -> bool:
        """Set ``to`` (and ``fields``) only if the task is in ``only_from`` (and at ``attempt``)."""

    @abc.abstractmethod
    def claim(self, task_id: str, worker: str, worker_instance: str) -> dict | None:
        """A waiting task becomes RUNNING on this worker as its next attempt; None if not waiting."""

    @abc.abstractmethod
    def release(self, task_id: str, attempt: int) -> bool:
        """A RUNNING attempt interrupted by a worker's shutdown goes back to PENDING, uncounted."""

    @abc.abstractmethod
    def request_cancel(self, task_id: str) -> bool: ...

    @abc.abstractmethod
    def cancel_requested(self, task_id: str) -> bool: ...

    @abc.abstractmethod
    def update_fields(self, task_id: str, **fields: Any) -> None: ...

    @abc.abstractmethod
    def delete(self, task_id: str) -> bool: ...

    def attempts(self, task_id: str) -> builtins.list[dict]:
        """Every counted attempt of the task, oldest first (see :mod:`jupyter_taskq.attempts`)."""
        return []

    def attempt_events(self, kind: str, since: float, limit: int) -> builtins.list[dict]:
        """Attempts that ``kind`` ("started" or "ended") at or after ``since``, oldest first, at most ``limit``
        (:data:`attempts.EVENT_FIELDS` each): an indexed read of what happened since, never a walk of every
        task, for the metrics endpoint (server/metrics.py)."""
        return []

    @abc.abstractmethod
    def running(self) -> builtins.list[dict]: ...

    @abc.abstractmethod
    def held(self, limit: int = 5000) -> builtins.list[dict]:
        """PENDING tasks held for their dependencies or start time (issue 24), oldest first."""

    @abc.abstractmethod
    def overdue_waiting(self, now: float) -> builtins.list[str]:
        """Waiting tasks whose ``expires_at`` has passed."""

    @abc.abstractmethod
    def results_older_than(self, ended_before: float) -> builtins.list[str]: ...

    @abc.abstractmethod
    def finished_before(self, ended_before: float, limit: int = 5000) -> builtins.list[str]:
        """Finished tasks that ended before ``ended_before``, oldest first: records due to be purged."""

    def compact(self) -> bool:
        """Give the space of purged records back to the file system, when that is worth it."""
        return False

    @abc.abstractmethod
    def blob_refs(self, key: str) -> int:
        """How many tasks whose files are still kept name the blob ``key``: at 0 it can go."""

    # Blobs belong to whoever uploaded them (issue 25): one record per (blob, owner), one file on disk.
    @abc.abstractmethod
    def add_blob_owner(self, key: str, owner: str) -> bool:
        """Record that ``owner`` uploaded the blob ``key``; True if they had not before."""

    @abc.abstractmethod
    def blob_owned(self, key: str, owner: str) -> bool:
        """Whether ``owner`` uploaded the blob ``key`` (no record: no access)."""

    @abc.abstractmethod
    def forget_blob(self, key: str) -> None:
        """Drop every owner record of the blob ``key`` (its file is being removed)."""

    @abc.abstractmethod
    def callbacks_due(self) -> builtins.list[str]:
        """Finished tasks with a callback_url whose delivery has not succeeded or given up."""

    # Workers
    # -- task tokens (jupyter_taskq/tasktokens.py): only their sha256, never the token ---------------
    @abc.abstractmethod
    def add_task_token(self, digest: str, task_id: str, attempt: int, owner: str | None) -> None: ...

    @abc.abstractmethod
    def task_token(self, digest: str) -> dict | None:
        """``{task_id, attempt, owner}`` of a task token's digest, or None."""

    @abc.abstractmethod
    def delete_task_token(self, digest: str) -> None: ...

    @abc.abstractmethod
    def register_worker(self, worker: dict) -> None: ...

    @abc.abstractmethod
    def heartbeat(self, name: str, instance: str, state: str, current_task: str | None,
                  warm: builtins.list | None = None, gpus: str | None = None) -> bool | tuple[str, ...]:
        """Record that the worker lives (and its warm processes; ``gpus``: the devices that its attempt holds,
        or, with state "lent", the devices of the gang that holds its own, as "2,3"); once after the server asked
        it to drop warm processes (:meth:`request_drop_warm`): True (all of them) or the owners whose to drop;
        else False."""

    @abc.abstractmethod
    def request_drop_warm(self, owner: str | None = None) -> int:
        """Ask every worker to end its warm task processes (``owner``: only that owner's) at its next
        heartbeat; how many were asked."""

    @abc.abstractmethod
    def workers(self) -> builtins.list[dict]: ...

    @abc.abstractmethod
    def remove_worker(self, name: str, instance: str | None = None) -> None: ...
