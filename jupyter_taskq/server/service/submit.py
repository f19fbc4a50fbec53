"""Submission: checking a task's options against what this queue has, and recording and queueing new tasks.

Part of :class:`~.TaskService` (a mixin of it: its methods use the service's store, queues and state).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from ... import conditions
from ... import image as image_module
from ... import options as options_module
from ... import seeds as seeds_module
from ...blobs import blob_of
from ...machine import machine_size
from ...payload import PayloadError, read_header
from ...backends.hueyqueue import AttemptSpec, enqueue_attempts
from ...pools import CPU_POOL, GPU_POOL, model_pool, pool_model
from ...statedir import create_private_file
from ...status import FINAL, TaskStatus
from .base import ServiceParts
from ...serviceerrors import ServiceError, bad_request, conflict
from .views import OPTION_NAMES

WAKE_AT_MOST = 64  # rings for a batch: more idle workers than this on one pool find the work at their next look


class Submission(ServiceParts):
    """Validating options, spooling payloads, submitting one task or a batch, retrying a finished one."""


    def _resolve_gpu_model(self, wanted: str) -> str:
        """The model name, as live workers report it, that ``gpu="<wanted>"`` means."""
        if len(wanted) > 200:
            raise bad_request("option 'gpu' must be 0, 1 or a GPU model name of at most 200 characters")
        models = sorted({w["model"] for w in self.alive_workers() if w["pool"] == GPU_POOL and w.get("model")}
                        | set(self.launcher.gpu_models() if self.launcher else ()))
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
        launcher = self.launcher
        return (launcher is not None and launcher.starts_pool(pool)) or \
            any(w["pool"] == pool for w in self.alive_workers())

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
        machines: dict[str | None, dict[str, Any]] = {}
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
        launcher = self.launcher
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


def _check_image_version(spec: dict | None, header: dict) -> None:
    """A payload pickled under one Python minor version is refused for a built image of another (the kernel
    checks first; this holds for any REST client). Existing environments are checked by the worker."""
    if not spec or not image_module.is_built(spec) or not spec.get("python_version"):
        return
    problem = image_module.version_problem(str(header.get("python_version") or ""), spec["python_version"],
                                           "the image's python_version")
    if problem and header.get("python_version"):
        raise ValueError(problem)
