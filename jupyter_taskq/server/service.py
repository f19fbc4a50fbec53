"""The one domain API behind every REST handler: submit, look up, cancel, retry, delete.

Handlers stay thin: they parse HTTP and call this. Every refusal is a
:class:`ServiceError` that carries its HTTP status and a message that says what
was wrong, so a client never sees a bare 500 for bad input.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import stat
import time
import uuid
from pathlib import Path
from urllib.parse import quote
from typing import Any, Callable, Iterable, Mapping

from ..backend import BellMap
from ..doorbell import work_bell
from ..machine import machine_size
from .. import image as image_module
from .. import imagecache
from .. import conditions
from .. import options as options_module
from .. import seeds as seeds_module
from .. import tasklog
from .. import taskio
from ..objectstore import ObjectStore
from ..blobs import blob_of
from ..payload import PayloadError, read_header
from ..recovery import fail_bad_task
from ..queue import (CPU_POOL, GPU_POOL, POOLS, AttemptSpec, enqueue_attempt, enqueue_attempts, model_pool,
                     pool_model)
from ..statedir import StateDir, create_private_file
from ..status import CANCELLABLE, FINAL, WAITING, TaskStatus
from ..store import TASK_COLUMNS, TaskStore
from ..storeerrors import with_reserve
from .blobstore import BlobShelf
from .metrics import QueueMetrics

log = logging.getLogger("jupyter_taskq.service")
CANCEL_CHUNK = 1000  # tasks cancelled per transaction (the store's writer is held that long)
#: ``POST tasks/results``: a result up to this size rides in the bulk answer; a bigger one is fetched on its own.
INLINE_RESULT = 1024 * 1024
#: ``POST tasks/results``: the most result bytes one answer holds (the server reads them into memory).
RESULTS_BUDGET = 32 * 1024 * 1024


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


def iso(ts: float | None) -> str | None:
    if ts is None or not isinstance(ts, (int, float)) or not -62135596800 < ts < 253402300800:
        return None  # no time, or one no date can show (a bad row): null, never an error
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


WAKE_AT_MOST = 64  # rings for a batch: more idle workers than this on one pool find the work at their next look
LIVE_WORKER_WINDOW = 10.0  # seconds since its last heartbeat for a worker to count as live
TASK_STATS_TTL = 1.0  # seconds a task JSON's queue-wide stats may be reused (one widget polls twice a second)

OPTION_NAMES = options_module.REST_NAMES  # declared once, in jupyter_taskq/options.py


def _open_beneath(root: Path, steps: list[str]) -> int:
    """Open ``root/steps[0]/.../steps[-1]`` read-only, following no symbolic link below ``root``."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for step in steps[:-1]:
            inner = os.open(step, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = inner
        # O_NONBLOCK: a FIFO planted as an output must not hang the server on open
        return os.open(steps[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


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


WAITING_VALUES = frozenset(s.value for s in WAITING)


class TaskService:
    callback_guard = None  # set by the extension: where callback_url may point (server/webhooks.py)

    def __init__(self, state: StateDir, store: TaskStore, queues: Mapping, *, gpus: list[int], workers_per_gpu: int,
                 cpu_workers: int, max_retries: int, retry_delay: float, retry_backoff: float, result_ttl: float,
                 base_url: str = "/", on_change: Callable[[str], None] = lambda task_id: None,
                 on_changes: Callable[[list[str]], None] | None = None,
                 work_bells: Mapping | None = None, objects: ObjectStore | None = None):
        self.state = state
        self.store = store
        self.image_dir = imagecache.image_dir(state.root)  # the app sets c.TaskQueue.image_dir's
        self.objects = objects or ObjectStore(state.files)
        self.queues = queues
        self.gpus = list(gpus)
        self.gpu_slots = len(self.gpus) * workers_per_gpu
        self.cpu_workers = cpu_workers
        self.defaults = {"max_retries": max_retries, "retry_delay": retry_delay, "retry_backoff": retry_backoff,
                         "result_ttl": result_ttl}
        self.on_change = on_change
        # Many tasks at once (a batch): one call, so the change feed hops to the event loop once.
        self.on_changes = on_changes or (lambda task_ids: [on_change(task_id) for task_id in task_ids])
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._disk_usage: int | None = None
        self._blob_usage = 0
        self._bells = work_bells if work_bells is not None else BellMap(lambda pool: work_bell(state.bells, pool))
        self._blank_row = {column: None for column in TASK_COLUMNS} | {"result_expired": 0}
        self._task_stats: tuple[float, dict | None] = (0.0, None)
        self.blobs = BlobShelf(state, store, self.objects)
        self.queue_metrics = QueueMetrics(self)  # counts from now on (server/metrics.py)

    # -- submission -------------------------------------------------------
    def _resolve_gpu_model(self, wanted: str) -> str:
        """The model name, as live workers report it, that ``gpu="<wanted>"`` means."""
        if len(wanted) > 200:
            raise bad_request("option 'gpu' must be 0, 1 or a GPU model name of at most 200 characters")
        models = sorted({w["model"] for w in self.alive_workers() if w["pool"] == GPU_POOL and w.get("model")}
                        | set(self.launcher.gpu_models() if getattr(self, "launcher", None) else ()))
        matches = [m for m in models if wanted.lower() in m.lower()]
        exact = [m for m in matches if m.lower() == wanted.lower()]
        if exact:
            return exact[0]
        if not matches:
            known = ", ".join(repr(m) for m in models) or "none of a known model"
            raise bad_request(f"no live worker has a GPU matching gpu={wanted!r}; the GPUs of live workers: {known}")
        if len(matches) > 1:
            raise bad_request(f"gpu={wanted!r} matches several GPU models ({', '.join(map(repr, matches))}); "
                              "name one of them")
        return matches[0]

    def _live_worker_in(self, pool: str) -> bool:
        """A worker started elsewhere (`jupyter taskq worker`, another machine) serves ``pool``, or the
        launcher starts such workers on demand (a Slurm job)."""
        launcher = getattr(self, "launcher", None)
        return (launcher is not None and launcher.starts_pool(pool)) or any(w["pool"] == pool for w in self.alive_workers())

    def validate_options(self, raw: Mapping[str, Any]) -> dict:
        """Every option checked to a finite, sane range (declared in :mod:`jupyter_taskq.options`), then
        what only this server knows: which GPUs and machines there are."""
        raw, wanted = conditions.split(raw)
        try:
            opts = options_module.validate(raw, self.defaults)
            opts["conditions"] = conditions.check(wanted, time.time())
        except (options_module.OptionError, conditions.ConditionError) as exc:
            raise bad_request(str(exc)) from None
        model, count = options_module.gpu_request(opts["gpu"])
        opts["gpu_model"] = self._resolve_gpu_model(model) if model else None
        opts["gpu"] = count  # stored: the number of GPUs (the model is the pool's)
        if opts["gpu"] and self.gpu_slots == 0 and not self._live_worker_in(GPU_POOL):
            raise bad_request("this server has no GPU workers (TaskQueue.gpus is empty or no GPU was detected) "
                              "and no live GPU worker has joined the queue; submit with gpu=0 or configure "
                              "c.TaskQueue.gpus")
        if not opts["gpu"] and self.cpu_workers == 0 and not self._live_worker_in(CPU_POOL):
            raise bad_request("this server has no CPU workers (TaskQueue.cpu_workers = 0) and no live CPU worker "
                              "has joined the queue; submit with gpu=1")
        if opts["cpu"] is not None or opts["memory"] is not None:
            self._check_machine_size(opts)
        if opts["gpu"] > 1:
            self._check_gpu_count(opts["gpu"], opts["gpu_model"])
        if opts["callback_url"] and self.callback_guard is not None:
            try:
                self.callback_guard.check_url(opts["callback_url"])
            except ValueError as exc:
                raise bad_request(str(exc)) from None
        return opts

    def _machines(self, pool: str) -> list[dict]:
        """``{where, cpus, memory_mib}`` of the machines whose workers serve ``pool`` (this one if it runs some)."""
        machines = {}
        for w in self.alive_workers():
            if w["pool"] == pool and w.get("cpus"):
                machines.setdefault(w.get("host"), {"where": f"{w['name']} on {w.get('host')}", "cpus": w["cpus"],
                                                    "memory_mib": w.get("memory_mib") or 0})
        local = self.gpu_slots if pool == GPU_POOL else self.cpu_workers
        if local and not machines:
            machines["local"] = {"where": "this machine", **machine_size()}
        return list(machines.values())

    def _check_machine_size(self, opts: dict) -> None:
        """A request no live worker's machine could ever meet is refused now, naming what there is."""
        machines = self._machines(GPU_POOL if opts["gpu"] else CPU_POOL)
        if not machines:
            return
        fits = [m for m in machines if (opts["cpu"] is None or opts["cpu"] <= m["cpus"])
                and (opts["memory"] is None or opts["memory"] <= m["memory_mib"])]
        if not fits:
            asked = ", ".join(f"{k}={opts[k]:.10g}" + (" MiB" if k == "memory" else "")
                              for k in ("cpu", "memory") if opts[k] is not None)
            there = "; ".join(f"{m['where']}: {m['cpus']} cores, {m['memory_mib']} MiB" for m in machines)
            raise bad_request(f"no live worker's machine can meet {asked}; the machines there are: {there}")

    def gpu_machines(self, model: str | None = None) -> dict[str, list[tuple[str, str | None]]]:
        """Each machine's GPUs as live GPU workers report them: ``{host: [(device, model), ...]}`` (only
        ``model``'s when given). Before this server's own workers have registered, its ``gpus``."""
        machines: dict[str, dict[str, str | None]] = {}
        for w in self.alive_workers():
            if w["pool"] == GPU_POOL and w.get("device") is not None:
                if model is None or w.get("model") == model:
                    machines.setdefault(w.get("host") or "?", {})[str(w["device"])] = w.get("model")
        if not machines and self.gpus and model is None:
            machines["this machine"] = {str(g): None for g in self.gpus}
        return {host: sorted(devices.items(), key=lambda d: (len(d[0]), d[0])) for host, devices in machines.items()}

    def _check_gpu_count(self, count: int, model: str | None) -> None:
        """``gpu=N`` more than any one live machine has (of that model) is refused now, naming them: a gang
        never spans machines, so it could never start."""
        machines = self.gpu_machines(model)
        if any(len(devices) >= count for devices in machines.values()):
            return
        launcher = getattr(self, "launcher", None)
        if launcher is not None and launcher.starts_pool(model_pool(model) if model else GPU_POOL):
            return  # its jobs ask for all N GPUs (--gres=gpu:N); one Slurm cannot place fails the tasks, saying why
        what = f"{count} GPUs of model {model!r}" if model else f"{count} GPUs"
        there = "; ".join(f"{host}: {len(devices)} GPU{'s' if len(devices) != 1 else ''} ("
                          + ", ".join(f"{d}" + (f" {m}" if m else "") for d, m in devices) + ")"
                          for host, devices in sorted(machines.items())) or "none"
        raise bad_request(f"no live machine has {what} for one task (a task's GPUs are all on one machine); "
                          f"the machines there are: {there}")

    def open_spool(self) -> tuple[Path, int]:
        """A private file for an upload in progress (payloads are code)."""
        path = self.state.spool / f"{uuid.uuid4().hex}.part"
        return path, create_private_file(path)

    def spool_bytes(self, data: bytes) -> Path:
        path, fd = self.open_spool()
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    def submit(self, spooled: Path, options: dict, retry_of: str | None = None) -> dict:
        """Take ownership of a spooled payload file and queue it; returns the task's JSON."""
        return self.submit_many([(spooled, options)], retry_of=retry_of, numbered=False)[0]

    def submit_many(self, items: list[tuple[Path, dict]], retry_of: str | None = None,
                    numbered: bool = True) -> list[dict]:
        """Take ownership of spooled payload files and queue them (one database transaction per table).

        The whole batch is refused before anything is written: a payload that is not one, or
        one naming a blob this server does not have (``409``: upload it, then submit again)."""
        try:
            blobs, seeds = [], []
            for index, (spooled, _options) in enumerate(items):
                try:
                    with open(spooled, "rb") as stream:
                        header = read_header(stream)
                    blobs.append(blob_of(header))
                    seeds.append(seeds_module.check(header.get("seed")))  # recorded: the task can be re-run exactly
                    _check_image_version(_options.get("image"), header)
                except (PayloadError, ValueError) as exc:
                    raise bad_request(f"tasks[{index}]: {exc}" if numbered else str(exc)) from None
            # From the check that its blob is here until its tasks are recorded, no delete may remove that blob.
            with self.blobs.lock if any(blobs) else contextlib.nullcontext():
                # A blob is its uploaders' (blobstore.py): a task may name only one its own owner uploaded.
                missing = self.blobs.missing((blob, options.get("owner")) for (_s, options), blob in zip(items, blobs))
                if missing:
                    raise ServiceError(409, f"the shared part {missing[0]} that the payload names is not on this "
                                            "server as yours (a shared part is its uploader's); upload it "
                                            f"(PUT taskq/api/blobs/{missing[0]}) and submit again", "blob missing")
                self._check_dependencies(items, numbered)
                tasks = []
                for (spooled, options), blob, seed in zip(items, blobs, seeds):
                    task = dict(self._new_task(options, retry_of), blob=blob, seed=seed)
                    os.replace(spooled, self.state.payload(task["id"]))
                    self.objects.publish(self.state.payload(task["id"]))
                    tasks.append(task)
                self._queue(tasks)
        finally:
            for spooled, _options in items:
                spooled.unlink(missing_ok=True)
        stats = self.task_stats()
        return [self.to_json({**self._blank_row, **task}, stats) for task in tasks]

    # -- blobs: parts shared by many payloads (jupyter_taskq/blobs.py) ----
    def has_blob(self, key: str, owner: str) -> bool:
        """Whether ``owner`` uploaded the blob and it is here (someone else's reads as absent)."""
        return self.blobs.has(key, owner)

    def put_blob(self, key: str, spooled: Path, owner: str) -> bool:
        """Keep an uploaded blob (its sha256 checked by the handler) as ``owner``'s; False if it was theirs
        already."""
        try:
            return self.blobs.put(key, spooled, owner)
        except PayloadError as exc:
            raise bad_request(f"a blob must be a jupyter-taskq payload: {exc}") from None

    def _check_dependencies(self, items: list[tuple[Path, dict]], numbered: bool) -> None:
        """Every task named in ``after`` must exist (an unknown id is refused: nothing would ever release
        the task). A new task's id is made here, after its dependencies exist, so no dependency can name
        it or anything after it: a cycle cannot be submitted, by construction."""
        wanted = {dep for _s, options in items for dep in (options.get("conditions") or {}).get("after", ())}
        if not wanted:
            return
        ids = list(wanted)
        found: set[str] = set()
        for start in range(0, len(ids), 5000):
            found.update(self.store.statuses(ids[start:start + 5000]))
        for index, (_s, options) in enumerate(items):
            unknown = [d for d in (options.get("conditions") or {}).get("after", ()) if d not in found]
            if unknown:
                where = f"tasks[{index}]: " if numbered else ""
                raise bad_request(f"{where}'after' names {unknown[0]!r}, which is not a task of this queue "
                                  f"({len(unknown)} unknown id(s))")

    def _new_task(self, options: dict, retry_of: str | None = None) -> dict:
        now = time.time()
        options = dict(options)
        model = options.pop("gpu_model", None)
        cond = options.pop("conditions", None) or {}
        task_id = options.pop("task_id", None) or str(uuid.uuid4())  # a schedule's run has its own (schedules.py)
        pool = model_pool(model) if model else GPU_POOL if options["gpu"] else CPU_POOL
        after = cond.get("after") or []
        held = bool(after) or cond.get("start_at") is not None
        return dict(options, id=task_id, status=TaskStatus.PENDING,
                    pool=pool, created_at=now, updated_at=now, attempt=0,
                    expires_at=now + options["expires"] if options["expires"] else None, retry_of=retry_of,
                    held=int(held), depends_on=after or None, waiting_for=after or None,
                    after_any_outcome=int(bool(cond.get("after_any_outcome"))), start_at=cond.get("start_at"),
                    schedule_id=options.pop("schedule_id", None))

    def _queue(self, tasks: list[dict]) -> None:
        """Record, then queue: a crash in between leaves waiting tasks that reconcile() re-queues. A held
        task (dependencies, a start time) gets no queue message: :meth:`release_held` queues it."""
        self.store.create_many(tasks)
        self.on_changes([task["id"] for task in tasks])  # the Lab panel's change feed hears of them at once
        self._enqueue([t for t in tasks if not t.get("held")])

    def _enqueue(self, tasks: list[dict]) -> None:
        for pool in {t["pool"] for t in tasks}:
            specs = [AttemptSpec(t["id"], retries=t["max_retries"], retry_delay=t["retry_delay"],
                                 retry_backoff=t["retry_backoff"], priority=t["priority"], expires_at=t["expires_at"])
                     for t in tasks if t["pool"] == pool]
            enqueue_attempts(self.queues[pool], specs)
            self._bells[pool].ring_times(min(len(specs), WAKE_AT_MOST))  # one idle worker per task

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

    # -- reading ----------------------------------------------------------
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

    def tasks_by_id(self, task_ids: list[str]) -> list[dict]:
        stats = self.task_stats()
        found = {t["id"]: t for t in self.store.list(None, limit=len(task_ids) or 1, ids=task_ids)}
        return [self.to_json(found[i], stats) if i in found else lost(i) for i in task_ids]

    def finished(self, task_ids: Iterable[str]) -> set[str]:
        """Those of ``task_ids`` that have finished (an unknown or deleted id counts: nothing to wait for)."""
        task_ids = list(task_ids)
        statuses = self.store.statuses(task_ids)
        return {i for i in task_ids if statuses.get(i, TaskStatus.COMPLETE) in FINAL}

    def alive_workers(self) -> list[dict]:
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
            "launcher": self.launcher.describe() if getattr(self, "launcher", None) is not None else None,
        }

    def drop_warm(self, owner: str | None = None) -> dict:
        """Every worker ends its warm task processes (keep_warm_seconds; ``owner``: only those of that owner's
        tasks) within a heartbeat (about 1 s)."""
        return {"workers_asked": self.store.request_drop_warm(owner)}

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
        launcher = getattr(self, "launcher", None)
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

    def _outputs_json(self, task: dict) -> list[dict]:
        if task["result_expired"] or not task.get("outputs"):
            return []
        expires_in = self._expires_in(task)
        base = self._task_url(task["id"])
        entries = (taskio.check_manifest_entry(o)[0] for o in task["outputs"])  # stored before the check too
        return [{"name": o["name"], "size": o["size"], "kind": o["kind"],
                 "url": f"{base}/outputs/{quote(o['name'], safe='')}", "expires_in": expires_in}
                for o in entries if o is not None]

    # -- actions ----------------------------------------------------------
    def cancel(self, task_ids: Any) -> dict:
        if not isinstance(task_ids, list) or not all(isinstance(i, str) for i in task_ids):
            raise bad_request('"task_ids" must be a list of task id strings')
        cancelled, not_cancelled = [], []
        ids = list(dict.fromkeys(task_ids))
        for start in range(0, len(ids), CANCEL_CHUNK):
            outcomes = with_reserve(self.state.root, lambda: self._cancel_chunk(ids[start:start + CANCEL_CHUNK]))
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

    def retry(self, task_id: str) -> dict:
        task = self.get_task(task_id)
        if task["status"] not in FINAL:
            raise conflict(f"task {task_id} is {task['status']}; only a finished task can be retried")
        source = self.state.payload(task_id)
        if not self.objects.fetch(source):
            raise ServiceError(410, f"the payload of task {task_id} has been removed", "gone")
        spooled, fd = self.open_spool()
        os.close(fd)
        spooled.unlink()
        try:
            os.link(source, spooled)
        except OSError:
            shutil.copyfile(source, spooled)
        options = {k: task[k] for k in OPTION_NAMES}
        options["owner"] = task.get("owner")  # a retry stays its owner's, whoever asked for it
        options["gpu_model"] = pool_model(task["pool"])  # the same model again (refused if none is live now)
        if options["gpu_model"]:
            options["gpu_model"] = self._resolve_gpu_model(options["gpu_model"])
        return self.submit(spooled, options, retry_of=task_id)

    def delete(self, task_id: str) -> None:
        task = self.get_task(task_id)
        if task["status"] not in FINAL:
            raise conflict(f"task {task_id} is {task['status']}; cancel it before deleting it")
        self._remove_files(task_id)  # first: on a full disk, the space they free lets the row go
        with_reserve(self.state.root, lambda: self.store.delete(task_id))
        self.blobs.release(task.get("blob"))  # the shared part goes with the last task that names it
        self.on_change(task_id)

    def result_path(self, task_id: str) -> Path:
        task = self.get_task(task_id)
        if task["status"] != TaskStatus.COMPLETE:
            raise conflict(f"task {task_id} is {task['status']}; its result is available once it is COMPLETE")
        path = self.state.result(task_id)
        if task["result_expired"] or not self.objects.fetch(path):
            raise ServiceError(410, f"the result of task {task_id} has expired (result TTL)", "gone")
        return path

    def results_many(self, task_ids: list[str], owner: str | None = None,
                     budget: int = RESULTS_BUDGET) -> list[tuple[dict, bytes]]:
        """Finished tasks' outcomes in one answer (``POST tasks/results``): ``(head, bytes)`` per id, in order.

        ``head["kind"]`` says what the bytes are: ``result`` (a COMPLETE task's pickled value), ``exception``
        (a FAILED task's pickled exception, when there is one), ``none`` (a final task with nothing to hand
        back: its ``task`` JSON says why), ``pending`` (not finished yet), ``big`` (a result over
        ``INLINE_RESULT`` or past ``budget``, or of a task that ran in an image: fetched on its own with
        ``GET tasks/<id>/result``, which streams it without a copy and marks an image's result), ``gone``
        (expired). One store read for every id, so a map of 2,000 tasks costs
        a few requests instead of 2,000. ``owner``: someone else's task is reported as one that does not
        exist, as ``GET tasks/<id>`` answers 404 for it."""
        found = {t["id"]: t for t in self.store.list(None, limit=len(task_ids) or 1, ids=task_ids)}
        out: list[tuple[dict, bytes]] = []
        for task_id in task_ids:
            task = found.get(task_id)
            if task is not None and owner is not None and task.get("owner") != owner:
                task = None
            if task is None:
                out.append(({"id": task_id, "kind": "none", "task": lost(task_id)}, b""))
                continue
            status = task["status"]
            head = {"id": task_id, "status": status}
            if status not in FINAL:
                out.append((dict(head, kind="pending"), b""))
            elif status == TaskStatus.COMPLETE:
                data, head["kind"] = b"", "big"
                path = self.state.result(task_id)
                if task["result_expired"] or not self.objects.fetch(path):
                    head["kind"] = "gone"
                elif (task.get("environment") or {}).get("hash"):
                    pass  # ran in an image: fetched alone, where the kernel compares the image's packages with its own
                else:
                    with contextlib.suppress(OSError):
                        if path.stat().st_size <= min(INLINE_RESULT, budget):
                            data, head["kind"] = path.read_bytes(), "result"
                            budget -= len(data)
                out.append((head, data))
            else:
                data = b""
                if status == TaskStatus.FAILED:
                    path = self.state.error_pickle(task_id)
                    with contextlib.suppress(OSError):
                        if self.objects.fetch(path, refresh=True) and path.stat().st_size <= min(INLINE_RESULT, budget):
                            data = path.read_bytes()
                            budget -= len(data)
                out.append((dict(head, kind="exception" if data else "none", task=self.to_json(task)), data))
        return out

    def error_pickle_path(self, task_id: str) -> Path:
        self.get_task(task_id)
        path = self.state.error_pickle(task_id)
        if not self.objects.fetch(path, refresh=True):  # each failed attempt writes its own
            raise ServiceError(404, f"task {task_id} has no pickled exception", "not found")
        return path

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

    def open_output(self, task_id: str, name: str) -> tuple[int, str]:
        """A read-only fd of a registered output of the task's last attempt, and the output's name; nothing
        else is ever served. A saved folder is offered as ``<name>.zip`` and found by its own name too.

        The file is reached from the state directory's ``outputs`` folder one step at a time,
        refusing a symbolic link at every step (``O_NOFOLLOW``), and must be a regular file: a
        task that swaps its output folder (or a file) for a link to ``/etc`` gets nothing served,
        and a swap after the check changes nothing, since what is served is what was opened."""
        task = self.get_task(task_id)
        registered = {o["name"]: o for o in task.get("outputs") or []}
        if name not in registered and (registered.get(f"{name}.zip") or {}).get("kind") == "folder":
            name = f"{name}.zip"  # Output("results").save() is offered as results.zip
        if name not in registered or taskio.output_name_problem(name):
            offered = ", ".join(sorted(registered)[:20]) or "none"
            raise ServiceError(404, f"task {task_id} has no output named {name!r} (its outputs: {offered})",
                               "not found")
        if task["result_expired"]:
            raise ServiceError(410, f"the outputs of task {task_id} have expired (result TTL)", "gone")
        steps = [task_id, str(task["attempt"]), "files", name]
        self.objects.fetch(self.state.files / "outputs" / Path(*steps))
        try:
            fd = _open_beneath(self.state.files / "outputs", steps)
        except FileNotFoundError:
            raise ServiceError(404, f"output {name!r} of task {task_id} is gone", "not found") from None
        except OSError:  # ELOOP, ENOTDIR: a link or a non-folder on the way
            fd = None
        if fd is not None and stat.S_ISREG(os.fstat(fd).st_mode):
            return fd, name
        if fd is not None:
            os.close(fd)
        raise ServiceError(403, f"output {name!r} of task {task_id} is not a regular file in its output folder",
                           "forbidden")

    def _log_of(self, task: dict, attempt: Any = None) -> tuple[Path, int, int]:
        """(path, dropped, attempt) of attempt ``attempt``'s own log (None: the latest attempt's).

        A task from before logs were kept per attempt has one log, read as its latest attempt's."""
        latest = task["attempt"] or 0
        if attempt is None:
            attempt = latest
        try:
            attempt = options_module.check_int("attempt", attempt, 0, options_module.MAX_OFFSET)
        except options_module.OptionError as exc:
            raise bad_request(str(exc).replace("option ", "", 1)) from None
        if attempt > latest or (attempt == 0 and latest):
            raise ServiceError(404, f"task {task['id']} has no attempt {attempt} (it has {latest})", "not found")
        path = self.state.attempt_log(task["id"], attempt)
        if self.objects.remote:
            return path, 0, attempt  # the object store's copy says its own count in its header
        if attempt == latest and not path.exists() and self.state.log(task["id"]).exists():
            return self.state.log(task["id"]), task.get("log_dropped") or 0, attempt
        return path, tasklog.read_dropped(path), attempt

    def log_size(self, task: dict, attempt: int) -> int:
        """Bytes attempt ``attempt`` printed (a capped log counts what it dropped too)."""
        path, dropped, _ = self._log_of(task, attempt)
        return self.objects.read_log(path, 0, 0, dropped)[1]

    def log_chunk(self, task_id: str, offset: int, limit: int = 1024 * 1024, attempt: Any = None) -> dict:
        """The log from byte ``offset`` (clients follow a running task by passing back ``next_offset``).

        Offsets count every byte the task printed. A capped log keeps bytes ``[dropped, size)``,
        contiguous (see :mod:`..tasklog`); asked for bytes before ``dropped``, the answer starts
        at ``dropped`` with a line saying how many bytes were skipped (``skipped``). Answers hold
        at most ``limit`` bytes, never end inside a UTF-8 character, and ``next_offset < size``
        means there is more: page on from ``next_offset``. Each attempt has its own log (``attempt``:
        its number; the latest attempt's by default): a retry starts a new log, at offset 0."""
        task = self.get_task(task_id)
        try:
            offset = options_module.check_int("offset", offset, 0, options_module.MAX_OFFSET)
        except options_module.OptionError as exc:
            raise bad_request(str(exc).replace("option ", "", 1)) from None
        path, dropped, attempt = self._log_of(task, attempt)
        dropped, size, start, data = self.objects.read_log(path, offset, limit, dropped)
        if data[:1] == b"\0" and not self.objects.remote:  # landed in a hole punched since we read the count
            task = self.get_task(task_id)
            dropped, size, start, data = self.objects.read_log(path, offset, limit, self._log_of(task, attempt)[1])
        reset = offset > size  # an offset from another log (the file was replaced): start again from its top
        if reset:
            offset = 0
            dropped, size, start, data = self.objects.read_log(path, 0, limit, dropped)
        if start + len(data) < size:
            data = data[:tasklog.utf8_safe_end(data)]
        skipped = start - offset
        text = (tasklog.marker(skipped) if skipped else "") + data.decode("utf-8", errors="replace")
        return {"offset": start, "next_offset": start + len(data), "size": size, "reset": reset,
                "skipped": skipped, "dropped": dropped, "expired": bool(task["result_expired"]),
                "status": task["status"], "attempt": attempt, "data": text}

    def disk_usage(self) -> int:
        """Bytes of task files and state (computed at most once per clean-up interval)."""
        if self._disk_usage is None:
            total = blobs = 0
            blob_folder = str(self.blobs.folder)
            for top in {self.state.root, self.state.files}:
                for root, _dirs, files in os.walk(top):
                    for name in files:
                        try:
                            size = os.lstat(os.path.join(root, name)).st_blocks * 512  # a capped log is sparse
                        except FileNotFoundError:
                            continue
                        total += size
                        if root == blob_folder:
                            blobs += size
            self._disk_usage, self._blob_usage = total, blobs
        return self._disk_usage

    def blob_usage(self) -> int:
        """Bytes of the shared payload parts (blobs): measured by the same walk as :meth:`disk_usage`."""
        self.disk_usage()
        return self._blob_usage

    def metrics(self, per_user: bool = False) -> bytes:
        """The Prometheus exposition text of this queue (server/metrics.py); ``per_user``: the hub service's
        per-user series too."""
        return self.queue_metrics.text(per_user)

def _check_image_version(spec: dict | None, header: dict) -> None:
    """A payload pickled under one Python minor version is refused for a built image of another (the kernel
    checks first; this holds for any REST client). Existing environments are checked by the worker."""
    if not spec or not image_module.is_built(spec) or not spec.get("python_version"):
        return
    problem = image_module.version_problem(str(header.get("python_version") or ""), spec["python_version"],
                                           "the image's python_version")
    if problem and header.get("python_version"):
        raise ValueError(problem)
