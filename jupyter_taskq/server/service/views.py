"""Reading tasks: one task's JSON, pages of the list, the queue's stats and metrics, and the change feed's helpers.

Part of :class:`~.TaskService` (a mixin of it: its methods use the service's store and state).
"""

from __future__ import annotations

import builtins
import datetime
import json
import time
from collections.abc import Iterable
from urllib.parse import quote

from ... import imagecache, taskio
from ... import options as options_module
from ...pools import GPU_POOL, POOLS, pool_model
from ...status import FINAL, WAITING, TaskStatus
from .base import ServiceParts
from ...serviceerrors import bad_request, lost, not_found

LIVE_WORKER_WINDOW = 10.0  # seconds since its last heartbeat for a worker to count as live
TASK_STATS_TTL = 1.0  # seconds a task JSON's queue-wide stats may be reused (one widget polls twice a second)
WAITING_VALUES = frozenset(s.value for s in WAITING)
OPTION_NAMES = options_module.REST_NAMES  # declared once, in jupyter_taskq/options.py


def iso(ts: float | None) -> str | None:
    if ts is None or not isinstance(ts, (int, float)) or not -62135596800 < ts < 253402300800:
        return None  # no time, or one no date can show (a bad row): null, never an error
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _warm_list(value) -> list:
    """A worker's warm task processes (function, idle seconds, ...), as SQLite (JSON text) or Redis keeps them."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return value if isinstance(value, list) else []


def _gpu_holding(worker: dict, running: dict | None) -> dict:
    """Which task holds this GPU worker's GPU, and with which others (a gang): its own attempt's, or
    ("lent") another worker's gang's. ``gpus``: the devices of that attempt, in order."""
    if worker.get("pool") != GPU_POOL:
        return {}
    devices = [int(d) for d in str(worker.get("gpus") or "").split(",") if d.strip().isdigit()]
    if running is not None:
        return {"gpu_task": running["id"], "gpu_task_name": running.get("name"), "lent": False,
                "gpus": devices or ([int(worker["device"])] if str(worker.get("device") or "").isdigit() else [])}
    if worker.get("state") == "lent":
        return {"gpu_task": worker.get("current_task"), "gpu_task_name": None, "lent": True, "gpus": devices}
    return {"gpu_task": None, "gpu_task_name": None, "lent": False, "gpus": []}


class TaskViews(ServiceParts):
    """What the API shows of tasks and of the queue; nothing here changes a task."""

    def get_task(self, task_id: str) -> dict:
        task = self.store.get(task_id)
        if task is None:
            raise not_found(task_id)
        return task

    def get(self, task_id: str) -> dict:
        return self.to_json(self.get_task(task_id))

    def list(self, statuses: Iterable[str] | None = None, limit: int = 50, offset: int = 0,
             text: str | None = None, owner: str | None = None, notebooks: Iterable[str] | None = None) -> dict:
        """A page of tasks, newest first. With ``notebooks`` (the paths a notebook may be recorded as): instead
        ``{"cells": {cell_id: {status: n}}, "total": n}`` over every task submitted from it (issue 14's cell
        marks), one indexed read however many other tasks the queue holds."""
        if notebooks:
            notebooks = list(notebooks)
            if len(notebooks) > 8 or not all(isinstance(n, str) and 0 < len(n) <= options_module.MAX_NAME
                                             for n in notebooks):
                raise bad_request(f"'notebook': at most 8 paths of at most {options_module.MAX_NAME} characters")
            cells = self.store.cell_counts(notebooks, owner=owner)
            return {"cells": cells, "total": sum(n for cell in cells.values() for n in cell.values())}
        statuses = list(statuses or [])
        valid = {s.value for s in TaskStatus}
        bad = [s for s in statuses if s not in valid]
        if bad:
            raise bad_request(f"unknown status {bad[0]!r}; statuses are {', '.join(sorted(valid))}")
        try:
            limit = options_module.check_int("limit", limit, 1, options_module.MAX_LIMIT)
            offset = options_module.check_int("offset", offset, 0, options_module.MAX_OFFSET)
        except options_module.OptionError as exc:
            raise bad_request(str(exc).replace("option ", "", 1)) from None
        stats = self.task_stats()
        if text is not None and len(text) > 200:
            raise bad_request("'q' must be at most 200 characters")
        text = text or None
        tasks = [self.to_json(t, stats) for t in self.store.list(statuses, limit, offset, text=text, owner=owner)]
        return {"tasks": tasks, "total": self.store.count(statuses, text=text, owner=owner), "limit": limit,
                "offset": offset}

    def fingerprint(self) -> tuple:
        """Changes whenever a task is added, removed or updated: how a missed change is still noticed."""
        return self.store.fingerprint()

    def tasks_by_id(self, task_ids: builtins.list[str]) -> builtins.list[dict]:
        stats = self.task_stats()
        found = {t["id"]: t for t in self.store.list(None, limit=len(task_ids) or 1, ids=task_ids)}
        return [self.to_json(found[i], stats) if i in found else lost(i) for i in task_ids]

    def finished(self, task_ids: Iterable[str]) -> set[str]:
        """Those of ``task_ids`` that have finished (an unknown or deleted id counts: nothing to wait for)."""
        task_ids = list(task_ids)
        statuses = self.store.statuses(task_ids)
        return {i for i in task_ids if statuses.get(i, TaskStatus.COMPLETE) in FINAL}

    def alive_workers(self) -> builtins.list[dict]:
        horizon = time.time() - LIVE_WORKER_WINDOW
        return [w for w in self.store.workers() if (w["heartbeat_at"] or 0) >= horizon]

    def task_stats(self) -> dict:
        """The queue-wide ``stats`` every task's JSON carries: asked of the store at most once per
        ``TASK_STATS_TTL`` however many tasks, requests and polling widgets want it."""
        at, stats = self._task_stats
        now = time.monotonic()
        if stats is None or now - at >= TASK_STATS_TTL:
            stats = {"queue_depth": sum(self.store.waiting_by_pool().values()),
                     "active_workers": len(self.alive_workers())}
            self._task_stats = (now, stats)
        return stats

    def stats(self) -> dict:
        waiting = self.store.waiting_by_pool()
        now = time.time()
        running = {t["worker_instance"]: t for t in self.store.running()}
        workers = [
            {"name": w["name"], "pool": w["pool"], "device": w["device"], "model": w.get("model"),
             "cpus": w.get("cpus"), "memory_mib": w.get("memory_mib"),
             "host": w["host"], "pid": w["pid"],
             "busy": w["instance"] in running,
             "current_task": running[w["instance"]]["id"] if w["instance"] in running else None,
             "busy_since": iso(running[w["instance"]]["started_at"]) if w["instance"] in running else None,
             "current_task_name": running[w["instance"]]["name"] if w["instance"] in running else None,
             "last_heartbeat": iso(w["heartbeat_at"]), "alive": (w["heartbeat_at"] or 0) >= now - LIVE_WORKER_WINDOW,
             "started_at": iso(w["started_at"]), "warm": _warm_list(w.get("warm")),
             **_gpu_holding(w, running.get(w["instance"]))}
            for w in self.store.workers()
        ]
        names = {t["id"]: t["name"] for t in running.values()}
        for worker in workers:  # a GPU lent to another worker's gang: that task's name too
            if worker.get("lent") and worker.get("gpu_task") in names:
                worker["gpu_task_name"] = names[worker["gpu_task"]]
        return {
            "queue_depth": {pool: waiting.get(pool, 0) for pool in sorted(set(POOLS) | set(waiting))},
            "workers": workers,
            "counts": self.store.counts_by_status(),
            "gpus": self.gpus,
            "disk_usage_bytes": self.disk_usage(),
            "images": imagecache.list_images(self.image_dir),  # image=: this machine's (or the shared) cache
            "launcher": self.launcher.describe() if self.launcher is not None else None,
        }

    def to_json(self, task: dict, stats: dict | None = None) -> dict:
        """The task as the API shows it: every declared option by its name, never Infinity or NaN."""
        return {
            "id": task["id"], "status": task["status"], "owner": task.get("owner"),
            **{name: options_module.json_value(task.get(name)) for name in OPTION_NAMES},
            "created_at": iso(task["created_at"]), "started_at": iso(task["started_at"]),
            "ended_at": iso(task["ended_at"]), "updated_at": iso(task["updated_at"]),
            "attempt": task["attempt"], "gpu_model": pool_model(task["pool"] or ""),
            "worker": task["worker"], "retry_of": task["retry_of"],
            "outputs": self._outputs_json(task), "error": task["error"],
            "progress": taskio.clean_progress(task["progress"]),  # a record stored before the check: no NaN out
            "limits": task.get("limits"),  # cpu=/memory=: held by the kernel, or advisory (worker/cgroups.py)
            "result": {"available": task["status"] == TaskStatus.COMPLETE and not task["result_expired"],
                       "size": task["result_size"], "expired": bool(task["result_expired"]),
                       "expires_in": self._expires_in(task)},
            "log": {"url": f"{self._task_url(task['id'])}/logs", "dropped": task.get("log_dropped") or 0},
            "callback": task.get("callback"),
            "seed": task.get("seed"),  # the seeds its random libraries started from (jupyter_taskq/seeds.py)
            "environment": task.get("environment"),  # its image's hash and resolved packages (worker/images.py)
            # a waiting gpu=N task: what it waits for ("waiting for 4 GPUs on one machine: 3 busy until ...")
            "waiting_for_gpus": task.get("waiting_for_gpus") if task["status"] in WAITING_VALUES else None,
            # issue 24: what a PENDING task waits for (conditions.py), and the schedule that made it
            "after": task.get("depends_on") or [], "after_any_outcome": bool(task.get("after_any_outcome")),
            "waiting_for": (task.get("waiting_for") or []) if task.get("held") else [],
            "start_at": iso(task.get("start_at")), "schedule_id": task.get("schedule_id"),
            "stats": stats if stats is not None else self.task_stats(),
            "waiting_note": self._waiting_note(task),  # in the launcher's words (waiting_for is the ids)
        }

    def _waiting_note(self, task: dict) -> str | None:
        """What a waiting task waits for, in the launcher's words ("waiting for Slurm job 1234, PENDING:
        Resources"); None when it is not waiting or the launcher has nothing to say."""
        launcher = self.launcher
        if launcher is None or str(task["status"]) not in {str(s) for s in WAITING}:
            return None
        return launcher.waiting_note(task.get("pool") or "cpu")

    def _task_url(self, task_id: str) -> str:
        return f"{self.base_url}taskq/api/tasks/{task_id}"

    def _expires_in(self, task: dict) -> float | None:
        """Seconds until the result, logs and outputs are removed (the TTL counts from the end)."""
        if task["result_expired"]:
            return 0
        ttl = task["result_ttl"] if task["result_ttl"] is not None else self.defaults["result_ttl"]
        if task["ended_at"] is None:
            return options_module.json_value(ttl)
        return options_module.json_value(max(0.0, round(task["ended_at"] + ttl - time.time(), 1)))

    def _outputs_json(self, task: dict) -> builtins.list[dict]:
        if task["result_expired"] or not task.get("outputs"):
            return []
        expires_in = self._expires_in(task)
        base = self._task_url(task["id"])
        entries = (taskio.check_manifest_entry(o)[0] for o in task["outputs"])  # stored before the check too
        return [{"name": o["name"], "size": o["size"], "kind": o["kind"],
                 "url": f"{base}/outputs/{quote(o['name'], safe='')}", "expires_in": expires_in}
                for o in entries if o is not None]

    def metrics(self, per_user: bool = False) -> bytes:
        """The Prometheus exposition text of this queue (server/metrics.py); ``per_user``: the hub service's
        per-user series too."""
        return self.queue_metrics.text(per_user)
