"""One worker: a process pinned to one GPU (or to none) that runs attempts one at a time.

This module is the loop: wait for work on its pools' doorbells, housekeeping (heartbeat, delayed
retries, reaping), the task processes made ready while idle (:mod:`.taskprocs`), and the hand-over of
each queue message to an :class:`~.attempt.Attempt`, which owns that attempt from claim to outcome.
Expiry is checked here from the message itself; Huey's executor is not in the path (no module
global, no revoke-flag read and delete per attempt).

Whatever fails around an attempt (the store, the disk, the worker's own code), the attempt still ends
in a final or retry status: the worker kills its processes and, until the status can be written,
takes no new work, trying again with a growing wait (a full disk, a Redis outage) instead of crashing
and being restarted.

Its settings are one :class:`~jupyter_taskq.workerconfig.WorkerConfig` (``--config``). The worker
never imports CUDA: forked children that use CUDA need a parent that has not touched it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import TypeVar

import dill  # noqa: F401 - imported once here, not in every forked attempt

from ..backends import Backend, open_child_backend
from ..instances import new_instance
from ..machine import machine_size
from ..pools import GPU_POOL, model_pool
from ..status import WAITING, TaskStatus
from ..storeerrors import check_free_space, is_storage_error
from ..workerconfig import DEFAULT_CONFIG, WorkerConfig
from . import cgroups, keeper, owner  # noqa: F401 - keeper: what attempts use, imported before any fork
from .attempt import HEARTBEAT_INTERVAL, Attempt
from .fair import FairTurns
from .gangturns import GangTurns
from .gpulocks import MachineGpus
from .proctree import become_subreaper, die_with_parent
from .taskprocs import TaskProcesses

log = logging.getLogger("jupyter_taskq.worker")
T = TypeVar("T")

SCHEDULE_INTERVAL = 0.5
#: Exit status of a worker that stopped because its batch job ends too soon for the next task (supervisor.py).
DRAINED = 75
MAX_BACKOFF = 5.0  # longest wait between two tries of a write that fails (full disk, store down)
OBSERVE_INTERVAL = 2.0  # how often a busy or lent GPU worker says what a waiting gang waits for


class Worker:
    def __init__(self, backend: Backend, name: str, pool: str, device: str | None = None,
                 config: WorkerConfig = DEFAULT_CONFIG, model: str | None = None,
                 machine_gpus: dict[int, str | None] | None = None):
        self.config = config
        self.state = backend.state
        self.objects = backend.objects
        self.name = name
        self.pool = pool
        self.model = model if pool == GPU_POOL and model else None
        # A GPU of a known model serves the tasks asking for that model first, then any GPU task.
        self.pools = [model_pool(self.model), pool] if self.model else [pool]
        self.cuda_devices = device if device is not None else ""
        self.exit_code = 0
        ends_at = os.environ.get("JUPYTER_TASKQ_JOB_ENDS_AT", "")
        #: When this worker's batch job ends (epoch seconds), if it runs in one with a time limit.
        self.ends_at = float(ends_at) if ends_at.isdigit() else None
        self.instance = new_instance(name)  # the attempts it claims name it: see jupyter_taskq/instances.py
        self.store = backend.open_store()
        self.hueys = [backend.open_queue(p) for p in self.pools]
        self.bells = [backend.work_bell(p) for p in self.pools]
        self.wait_for_any = backend.wait_for_any  # sleeps on all its pools' bells at once
        fair = FairTurns(self.store, self.state.root) if pool == GPU_POOL else None
        self.fair = fair  # hub service (issue 15)
        # A GPU worker takes tasks through the machine's GPU allocator: gangs, reservation, backfill (issue 26).
        self.gangs: GangTurns | None = None
        if fair is not None and device is not None and device.isdigit():  # (fair: the GPU pool)
            machine = dict(machine_gpus or {}) or {int(device): self.model}
            machine.setdefault(int(device), self.model)
            gpus = MachineGpus(self.state.root / "gpus", machine, int(device), name)
            self.gangs = GangTurns(self.store, fair, gpus, self.pools, self.hueys)
        self._lent: dict | None = None  # the gang (of another worker) that holds this worker's GPU
        self.events = backend.events_ringer()
        self.stopping = False
        self._next_heartbeat = 0.0
        self._next_schedule = 0.0
        self._next_observe = 0.0
        self.processes = TaskProcesses(self.state.root, name, self.cuda_devices, config.kill_grace, config.max_warm)
        self._fetched_blobs: set[Path] = set()  # this machine's copies of shared parts (object store)
        self._failing: str | None = None  # what cannot be written now (logged once per streak)
        self._said_advisory = False  # cpu=/memory= cannot be held here: said once
        # Where the attempt's tasks reach the queue (tasktokens.py); none: a connect() in a task says so.
        from .. import tasktokens

        self.server_url = os.environ.get(tasktokens.SERVER_URL_ENV) or None

    # -- main loop --------------------------------------------------------
    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        logging.getLogger("huey").setLevel(logging.WARNING)  # not a line per task
        become_subreaper()  # a keeper that dies leaves its task's processes to us, not to init
        cgroups.probe()  # once, before any keeper is forked (they inherit what it found)
        cgroups.sweep()  # what keepers killed with their worker left behind
        registered = self.until_written("this worker's registration", lambda: self.store.register_worker({
            "name": self.name, "instance": self.instance, "pool": self.pool, "device": self.cuda_devices or None,
            "model": self.model, **machine_size(),  # cpu= and memory= requests are checked against it
            "host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time(),
            "heartbeat_at": time.time(), "state": "idle", "current_task": None,
        }) or True)
        if registered:
            log.info("worker %s (pool %s, CUDA_VISIBLE_DEVICES=%r) ready", self.name, self.pool, self.cuda_devices)
        backoff = 0.0
        try:
            while not self.stopping:
                try:
                    self.housekeeping(None)
                    self._check_free_space()
                    taken = self._next_message()
                    if taken is None:
                        if not self.stopping:
                            self.processes.ensure_spare()  # the next attempt's process, made while idle
                        self._drop_fetched_blobs()
                        self.wait_for_any(self.bells, SCHEDULE_INTERVAL)
                    else:
                        try:
                            self._take(*taken)
                        finally:  # ended, expired or not run: the GPUs taken for it are free again
                            if self.gangs is not None:
                                self.gangs.release()
                    backoff = self._recovered("the queue")
                except Exception as exc:  # noqa: BLE001 - full disk, store down: wait, never crash-loop
                    backoff = min(MAX_BACKOFF, max(0.5, backoff * 2))
                    self._failed("the queue", exc)
                    self._sleep(backoff)
        finally:
            self.processes.drop_all()
            try:
                self.store.remove_worker(self.name, self.instance)
            except Exception:  # noqa: BLE001 - the sweep forgets a silent worker anyway
                log.warning("could not remove worker %s from the store", self.name)

    def _check_free_space(self) -> None:
        """Take no task while the state directory is (nearly) full: its result, log and status could
        not be written, and every attempt would fail and use up a retry. Raises ENOSPC (backing off)."""
        check_free_space(*{self.state.root, self.state.files})

    def _take(self, huey, message) -> None:
        """A dequeued message: back on the schedule if early, EXPIRED if past its expiry, else its attempt runs."""
        now = huey._get_timestamp()
        if not huey.ready_to_run(message, now):
            huey.add_schedule(message)
        elif message.expires_resolved and message.expires_resolved < now:
            self._expire(message.args[0])
        else:
            Attempt(self, huey, message).run()

    def _next_message(self):
        """(queue, message): the next message of the first of this worker's pools that has one (its model's first)."""
        if self.gangs is not None:
            return self._next_gpu_message()
        for huey in self.hueys:
            task = huey.dequeue()
            if task is not None and self.fair is not None:
                task = self.fair.choose(huey, task, self.pools[self.hueys.index(huey)])
            if task is not None:
                return huey, task
        return None

    def _next_gpu_message(self):
        """A GPU worker: nothing while another worker's gang holds its GPU; else the task the machine's
        plan starts on it (:mod:`.gangturns`), with its GPUs taken."""
        self._lent = self.gangs.gpus.lent_to()
        if self._lent is not None:
            return None
        for huey in self.hueys:
            task = huey.dequeue()
            if task is not None:
                chosen = self.gangs.choose(huey, task)
                if chosen is None:
                    return None
                return chosen
        return None

    def _on_stop_signal(self, signum, frame) -> None:
        self.stopping = True

    # -- writes that must happen --------------------------------------------
    def drain(self) -> None:
        """The batch job ends before the next task could: stop, with the exit status that says so."""
        self.stopping, self.exit_code = True, DRAINED

    def until_written(self, what: str, write: Callable[[], T]) -> T | None:
        """Run ``write`` until it succeeds and return its value (None if the worker stops first).

        A worker that cannot record what happened (a full disk, its store unreachable) takes no
        new work meanwhile; it tries again with a growing wait and goes on by itself once it can.
        An error that is not about the store's storage (a bad row) is given up after a few tries.
        """
        backoff, tries = 0.0, 0
        while True:
            try:
                value = write()
            except Exception as exc:  # noqa: BLE001
                tries += 1
                if self.stopping or (tries >= 3 and not is_storage_error(exc)):
                    log.error("gave up writing %s: %s: %s", what, type(exc).__name__, exc)
                    return None
                backoff = min(MAX_BACKOFF, max(0.5, backoff * 2))
                self._failed(what, exc)
                self._sleep(backoff)
                continue
            self._recovered()
            return value

    def _failed(self, what: str, exc: BaseException) -> None:
        if self._failing is None:
            log.error("cannot use %s (%s: %s); taking no new work until it can, trying again at least "
                      "every %g s", what, type(exc).__name__, exc, MAX_BACKOFF)
            self._failing = what

    def _recovered(self, what: str | None = None) -> float:
        if self._failing is not None:
            log.warning("writing works again (%s); taking work", self._failing)
            self._failing = None
        return 0.0

    def _sleep(self, seconds: float) -> None:
        """Sleep, waking early for a stop signal."""
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(0.2, left))

    def heartbeat_now(self) -> None:
        self._next_heartbeat = 0.0

    def housekeeping(self, running_task: str | None) -> None:
        """Heartbeat once a second; when idle, move delayed retries whose time has come onto the queue."""
        self.processes.reap()
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_INTERVAL
            if cgroups.sweep():  # a keeper killed with its worker (here or on another worker of this machine)
                log.warning("ended the processes of a task whose keeper and worker were killed together")
            self.processes.tick(now)
            if self.gangs is not None and now >= self._next_observe and (running_task or self._lent):
                self._next_observe = now + OBSERVE_INTERVAL
                try:
                    self.gangs.observe()  # what a waiting gpu=N task waits for, while this GPU is taken
                except Exception:  # noqa: BLE001 - only what a waiting task's JSON says
                    log.warning("could not say what waiting GPU tasks wait for", exc_info=True)
            state, task, gpus = "busy" if running_task else "idle", running_task, None
            if running_task and self.gangs is not None and self.gangs.gpus.held:
                gpus = ",".join(map(str, self.gangs.gpus.held))
            elif running_task is None and self._lent is not None:  # its GPU is in another worker's gang
                state, task, gpus = "lent", self._lent.get("task"), ",".join(map(str, self._lent.get("devices") or []))
            asked = self.store.heartbeat(self.name, self.instance, state, task, self.processes.warm_processes(), gpus)
            if asked:  # DELETE taskq/api/warm: every warm process (True), or those of the owners named
                self.processes.drop_warm(None if asked is True else asked)
        if running_task is None and now >= self._next_schedule:
            self._next_schedule = now + SCHEDULE_INTERVAL
            for huey, bell in zip(self.hueys, self.bells):
                for task in huey.read_schedule():  # delayed retries whose time has come
                    huey.enqueue(task)
                    bell.ring()

    def changed(self, task_id: str) -> None:
        """Ring the change feed: long-polls on this task wake now."""
        try:
            self.events.ring(task_id.encode() + b"\n")
        except Exception:  # noqa: BLE001 - a missed note only delays a long-poll until its next look
            log.warning("could not announce a change of task %s", task_id)

    def ring_pool(self, huey) -> None:
        """A retry went back on ``huey``'s queue: wake this pool's idle workers."""
        try:
            self.bells[self.hueys.index(huey)].ring()
        except Exception:  # noqa: BLE001 - idle workers look at the queue every half second anyway
            pass

    def _expire(self, task_id: str) -> None:
        error = {"type": "Expired", "message": "not started before its expiry time", "traceback": None}
        if self.store.transition(task_id, TaskStatus.EXPIRED, WAITING, error=error):
            self.changed(task_id)

    def say_enforcement(self, task: dict) -> None:
        """The task's JSON says how its cpu= and memory= are held (``limits``); where the kernel cannot
        hold them (no writable cgroup), the worker says once that they are advisory."""
        held = cgroups.enforcement(task.get("memory"), task.get("cpu"))
        if not held["enforced"] and not self._said_advisory:
            self._said_advisory = True
            log.warning("cpu= and memory= are advisory on this worker (no writable cpuset or memory cgroup: %s); "
                        "a task can go past them", cgroups.probe().describe())
        try:
            self.store.update_fields(task["id"], limits=held)
        except Exception:  # noqa: BLE001 - only what the task's JSON shows; the attempt runs anyway
            log.warning("could not record how task %s's limits are held", task["id"])

    # -- blobs: a map()'s shared function part (jupyter_taskq/blobs.py) -----
    def fetch_blob(self, header: dict) -> None:
        """With an object store, bring the shared part the payload names here too (once while busy)."""
        key = header.get("blob")
        if key is None or not self.objects.remote:
            return
        path = self.state.blob(key)
        if not self.objects.fetch(path):
            raise FileNotFoundError(f"the shared part {key} of the payload is not in the object store")
        self._fetched_blobs.add(path)

    def _drop_fetched_blobs(self) -> None:
        """Idle: this machine's copies of shared parts would only pile up (the object store keeps them)."""
        while self._fetched_blobs:
            self._fetched_blobs.pop().unlink(missing_ok=True)

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one jupyter-taskq worker (normally started by the supervisor).")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--redis", default=os.environ.get("JUPYTER_TASKQ_REDIS_URL", ""),
                        help="Redis URL of a shared queue (default: $JUPYTER_TASKQ_REDIS_URL, else SQLite)")
    parser.add_argument("--files-dir", default=None, help="with --redis: the shared directory for task files")
    parser.add_argument("--name", required=True)
    parser.add_argument("--pool", required=True, choices=["cpu", "gpu"])
    parser.add_argument("--device", default=None, help="the GPU index this worker is pinned to")
    parser.add_argument("--model", default=None, help="the model name of that GPU (tasks may ask for it)")
    parser.add_argument("--machine-gpus", default=None, metavar="JSON",
                        help='every GPU of this machine and its model, {"0": "A100", "1": null}: a gpu=N task takes '
                             "N of them (default: only --device)")
    parser.add_argument("--config", default="{}", metavar="JSON",
                        help="the workers' settings, one WorkerConfig as JSON (jupyter_taskq/workerconfig.py)")
    parser.add_argument("--die-with-parent", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = WorkerConfig.from_json(args.config)
    except ValueError as exc:
        parser.error(str(exc))
    if args.die_with_parent:
        die_with_parent()
    logging.basicConfig(level=logging.INFO, format=f"[taskq {args.name}] %(levelname)s %(message)s")
    backend = open_child_backend(Path(args.state_dir), args.redis, args.files_dir)
    if config.run_as_owner:
        owner.check_can_run_as_owners(backend.state)
    machine = {int(d): m for d, m in json.loads(args.machine_gpus).items()} if args.machine_gpus else None
    worker = Worker(backend, args.name, args.pool, args.device, config, args.model, machine)
    worker.run()
    sys.exit(worker.exit_code)


if __name__ == "__main__":
    main()
