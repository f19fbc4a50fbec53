"""One worker: a process pinned to one GPU (or to none) that runs attempts one at a time.

The loop asks Huey for the next message of its pool and lets ``huey.execute``
apply expiry and revocation; the attempt itself runs in a fresh process under a
keeper (:mod:`.task_process`) so that cancel and timeout can kill it and all it
started, and a crash takes only that attempt. Retries are scheduled here from the
store's counts. When the queue is empty the worker sleeps on its pool's doorbell,
so it wakes the moment work arrives and burns nothing while idle.

Whatever fails around an attempt (the store, the disk, the worker's own code), the
attempt still ends in a final or retry status: the worker kills its processes and,
until the status can be written, takes no new work, trying again with a growing
wait (a full disk, a Redis outage) instead of crashing and being restarted.

The worker never imports CUDA: forked children that use CUDA need a parent that
has not touched it.
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import json
import logging
import os
import re
import select
import shutil
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, TypeVar

import dill  # noqa: F401 - imported once here, not in every forked attempt
from huey.signals import SIGNAL_EXPIRED

from .. import payload, tasktokens
from ..backends import Backend, open_child_backend
from ..instances import new_instance
from ..machine import machine_size
from ..options import retry_for_matches
from ..backends.hueyqueue import set_attempt_runner
from ..pools import GPU_POOL, model_pool
from ..statedir import create_private_file, make_private_dir, open_for_owners
from ..status import WAITING, TaskStatus
from ..storeerrors import check_free_space, is_storage_error
from . import cgroups, display, limits, owner, runner  # noqa: F401 - display, owner: imported once here, not in each attempt
from .fair import FairTurns
from .gangturns import GangTurns
from .gpulocks import MachineGpus
from ..recovery import requeue_attempt, retry_or_fail
from .proctree import become_subreaper, children, die_with_parent, signal_all
from .imagestep import ImageStep, run_env as image_run_env
from .task_io import AttemptWatcher
from .task_process import EXIT_STALE, TaskProcess

log = logging.getLogger("jupyter_taskq.worker")
T = TypeVar("T")

HEARTBEAT_INTERVAL = 1.0
SCHEDULE_INTERVAL = 0.5
#: Exit status of a worker that stopped because its batch job ends too soon for the next task (supervisor.py).
DRAINED = 75
DRAIN_MARGIN = 15.0  # seconds: a task is not started in the last seconds of a job, nor one that would need them
POLL_INTERVAL = 0.25  # how often a running attempt checks for cancel and timeout
MAX_BACKOFF = 5.0  # longest wait between two tries of a write that fails (full disk, store down)
PER_TASK_HEADER = frozenset({"seed"})  # payload header fields that differ between calls of one function
MAX_WARM = 4  # warm task processes a worker keeps at most (they hold memory); the oldest idle one goes
OBSERVE_INTERVAL = 2.0  # how often a busy or lent GPU worker says what a waiting gang waits for
STRAY_WATCH = 5.0  # seconds after a keeper died that the worker looks for its orphans


class Worker:
    def __init__(self, backend: Backend, name: str, pool: str, device: str | None = None, kill_grace: float = 2.0,
                 log_max_bytes: int = 10 * 1024 * 1024, model: str | None = None, run_as_owner: bool = False,
                 machine_gpus: dict[int, str | None] | None = None):
        self.state = backend.state
        # Hub service (issue 15): each attempt runs as its owner's Unix account (worker/owner.py).
        self.run_as_owner = run_as_owner
        self._owner: owner.Owner | None = None  # the account the attempt in flight runs as
        self.objects = backend.objects
        self.name = name
        self.pool = pool
        self.model = model if pool == GPU_POOL and model else None
        # A GPU of a known model serves the tasks asking for that model first, then any GPU task.
        self.pools = [model_pool(self.model), pool] if self.model else [pool]
        self.cuda_devices = device if device is not None else ""
        self.kill_grace = kill_grace
        self.log_max_bytes = log_max_bytes
        self.exit_code = 0
        ends_at = os.environ.get("JUPYTER_TASKQ_JOB_ENDS_AT", "")
        #: When this worker's batch job ends (epoch seconds), if it runs in one with a time limit.
        self.ends_at = float(ends_at) if ends_at.isdigit() else None
        self.instance = new_instance(name)  # the attempts it claims name it: see jupyter_taskq/instances.py
        self.store = backend.open_store()
        self.hueys = [backend.open_queue(p) for p in self.pools]
        self.bells = [backend.work_bell(p) for p in self.pools]
        self.wait_for_any = backend.wait_for_any  # sleeps on all its pools' bells at once
        self.fair = FairTurns(self.store, self.state.root) if pool == GPU_POOL else None  # hub service (issue 15)
        # A GPU worker takes tasks through the machine's GPU allocator: gangs, reservation, backfill (issue 26).
        self.gangs: GangTurns | None = None
        if pool == GPU_POOL and device is not None and device.isdigit():
            machine = dict(machine_gpus or {}) or {int(device): self.model}
            machine.setdefault(int(device), self.model)
            gpus = MachineGpus(self.state.root / "gpus", machine, int(device), name)
            self.gangs = GangTurns(self.store, self.fair, gpus, self.pools, self.hueys)
        self._lent: dict | None = None  # the gang (of another worker) that holds this worker's GPU
        self._attempt_devices = self.cuda_devices  # the GPUs of the attempt in flight ("2,3" for a gang)
        self.huey = self.hueys[0]  # the queue of the attempt being run (set as each is dequeued)
        self.events = backend.events_ringer()
        self.stopping = False
        self._next_heartbeat = 0.0
        self._next_schedule = 0.0
        self._next_observe = 0.0
        self._spare: TaskProcess | None = None
        self._current: TaskProcess | None = None  # the keeper of the attempt being run
        self._warm: dict[str, TaskProcess] = {}  # keep_warm_seconds: idle task processes by what they serve
        self._exited: list[int] = []  # keepers that reported or were retired, to reap
        self._fetched_blobs: set[Path] = set()  # this machine's copies of shared parts (object store)
        self._strays_until = 0.0  # a keeper died abnormally: orphans of its tree may come to us
        self._failing: str | None = None  # what cannot be written now (logged once per streak)
        self._warm_up: str | None | bool = False  # the warm-up payload's path (False: not written yet)
        # Where the attempt's tasks reach the queue (tasktokens.py); none: a connect() in a task says so.
        self.server_url = os.environ.get(tasktokens.SERVER_URL_ENV) or None
        self._attempt_env: dict[str, str] = {}  # the attempt's task token and that URL (_start_token)

    # -- main loop --------------------------------------------------------
    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        logging.getLogger("huey").setLevel(logging.WARNING)  # not a line per task
        set_attempt_runner(self._run_attempt)
        for huey in self.hueys:
            huey.signal(SIGNAL_EXPIRED)(self._on_expired)
        become_subreaper()  # a keeper that dies leaves its task's processes to us, not to init
        cgroups.probe()  # once, before any keeper is forked (they inherit what it found)
        cgroups.sweep()  # what keepers killed with their worker left behind
        registered = self._until_written("this worker's registration", lambda: self.store.register_worker({
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
                    self._housekeeping(None)
                    self._check_free_space()
                    task = self._next_message()
                    if task is None:
                        self._ensure_spare()
                        self._drop_fetched_blobs()
                        self.wait_for_any(self.bells, SCHEDULE_INTERVAL)
                    else:
                        try:
                            self.huey.execute(task)
                        finally:  # ended, expired or not run: the GPUs taken for it are free again
                            if self.gangs is not None:
                                self.gangs.release()
                    backoff = self._recovered("the queue")
                except Exception as exc:  # noqa: BLE001 - full disk, store down: wait, never crash-loop
                    backoff = min(MAX_BACKOFF, max(0.5, backoff * 2))
                    self._failed("the queue", exc)
                    self._sleep(backoff)
        finally:
            self._drop_spare()
            try:
                self.store.remove_worker(self.name, self.instance)
            except Exception:  # noqa: BLE001 - the sweep forgets a silent worker anyway
                log.warning("could not remove worker %s from the store", self.name)

    def _check_free_space(self) -> None:
        """Take no task while the state directory is (nearly) full: its result, log and status could
        not be written, and every attempt would fail and use up a retry. Raises ENOSPC (backing off)."""
        check_free_space(*{self.state.root, self.state.files})

    def _next_message(self):
        """The next message of the first of this worker's pools that has one (its model's first)."""
        if self.gangs is not None:
            return self._next_gpu_message()
        for huey in self.hueys:
            task = huey.dequeue()
            if task is not None and self.fair is not None:
                task = self.fair.choose(huey, task, self.pools[self.hueys.index(huey)])
            if task is not None:
                self.huey = huey
                return task
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
                self.huey, task = chosen
                return task
        return None

    def _on_stop_signal(self, signum, frame) -> None:
        self.stopping = True

    # -- writes that must happen --------------------------------------------
    def _until_written(self, what: str, write: Callable[[], T]) -> T | None:
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

    def _housekeeping(self, running_task: str | None) -> None:
        """Heartbeat once a second; when idle, move delayed retries whose time has come onto the queue."""
        if self._exited:
            self._reap_exited()
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_INTERVAL
            if cgroups.sweep():  # a keeper killed with its worker (here or on another worker of this machine)
                log.warning("ended the processes of a task whose keeper and worker were killed together")
            if now < self._strays_until:
                self._end_strays()
            if self._warm:
                self._expire_warm(now)
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
            asked = self.store.heartbeat(self.name, self.instance, state, task, self.warm_processes(), gpus)
            if asked:  # DELETE taskq/api/warm: every warm process (True), or those of the owners named
                self.drop_warm(None if asked is True else asked)
        if running_task is None and now >= self._next_schedule:
            self._next_schedule = now + SCHEDULE_INTERVAL
            for huey, bell in zip(self.hueys, self.bells):
                for task in huey.read_schedule():  # delayed retries whose time has come
                    huey.enqueue(task)
                    bell.ring()

    def _changed(self, task_id: str) -> None:
        try:
            self.events.ring(task_id.encode() + b"\n")
        except Exception:  # noqa: BLE001 - a missed note only delays a long-poll until its next look
            log.warning("could not announce a change of task %s", task_id)

    def _on_expired(self, signal_name, huey_task, *args) -> None:
        task_id = huey_task.args[0]
        error = {"type": "Expired", "message": "not started before its expiry time", "traceback": None}
        if self.store.transition(task_id, TaskStatus.EXPIRED, WAITING, error=error):
            self._changed(task_id)

    # -- one attempt ------------------------------------------------------
    def _run_attempt(self, task_id: str, huey_task) -> None:
        """Run by Huey for each dequeued attempt. It never raises: Huey would log and swallow the error
        and leave the task RUNNING. Whatever goes wrong, the attempt ends in a final or retry status
        (the worker waits, taking no work, until it can record it); retries are scheduled here, from
        the store's counts, not by Huey."""
        if self.ends_at is not None and self._outlasts_job(task_id):
            # A batch job near its time limit: the message goes back for a job with time, and this worker ends.
            self._until_written(f"the queue entry of task {task_id}", lambda: self.huey.enqueue(huey_task) or True)
            self.stopping, self.exit_code = True, DRAINED
            return
        self._attempt_devices = self.cuda_devices
        if self.gangs is not None:
            devices = self.gangs.devices_for(task_id)
            if devices is None:  # no GPUs taken for it: never run; a waiting task keeps its message (a turn)
                if self.store.statuses([task_id]).get(task_id) in {s.value for s in WAITING}:
                    self._until_written(f"the queue entry of task {task_id}",
                                        lambda: self.huey.enqueue(huey_task) or True)
                return  # (a message of a task no longer waiting is dropped, as a claim would find nothing)
            self._attempt_devices = ",".join(map(str, devices))
        task = self._until_written(f"the start of task {task_id}",
                                   lambda: self.store.claim(task_id, self.name, self.instance) or {})
        if not task:
            if task is None and self.stopping:  # stopping before the claim could be written: keep the message
                self._until_written(f"the queue entry of task {task_id}", lambda: self.huey.enqueue(huey_task) or True)
            self._changed(task_id)  # a claim may have ended it CANCELLED (a cancel asked while it ran is final)
            return  # cancelled, expired or deleted while it waited (or its row cannot be claimed: logged)
        self._changed(task_id)
        if self.gangs is not None:
            self._next_heartbeat = 0.0  # stats show which task holds which GPUs now, not in a second
        token_digest = self._start_token(task)
        try:
            outcome, error = self._execute_in_child(task)
            if outcome == "failed":
                error = limits.memory_failure(task, error, self._attempt_memory) or error  # memory= ran out
        except Exception as exc:  # noqa: BLE001 - the worker's own failure ends the attempt, never the task
            log.exception("worker error around attempt %d of task %s", task["attempt"], task_id)
            outcome, error = "failed", _worker_error(exc)
        finally:
            self._end_token(token_digest)
        try:
            if outcome != "superseded":  # a superseded attempt's files are not the task's
                self._publish_files(task)  # before the new status: whoever sees it can fetch them
        except Exception:  # noqa: BLE001
            log.exception("could not publish the files of task %s", task_id)
        self._record_outcome(task, outcome, error)

    def _outlasts_job(self, task_id: str) -> bool:
        """Whether this worker's batch job (``JUPYTER_TASKQ_JOB_ENDS_AT``, set by the Slurm launcher's job
        script) ends before task ``task_id`` could reach its ``timeout``, or within DRAIN_MARGIN anyway."""
        left = self.ends_at - time.time()
        if left <= DRAIN_MARGIN:
            log.info("the job ends in %.0f s: taking no task", left)
            return True
        task = self.store.get(task_id) or {}
        timeout = task.get("timeout")
        if timeout and timeout > left - DRAIN_MARGIN:
            log.info("task %s may run %g s, more than the %.0f s this job has left: leaving it to another job",
                     task_id, timeout, left)
            return True
        return False

    def _start_token(self, task: dict) -> str | None:
        """Mint this attempt's task token (tasktokens.py): the attempt reaches the queue as its owner with
        it. Not stored (a full disk, the store down): the attempt runs anyway, and a connect() in it says
        it has no credential. Returns the digest to delete when the attempt ends."""
        self._attempt_env = tasktokens.attempt_env(None, None)
        if not self.server_url:
            return None
        token, digest = tasktokens.mint()
        try:
            self.store.add_task_token(digest, task["id"], task["attempt"], task.get("owner"))
        except Exception:  # noqa: BLE001
            log.warning("could not store the task token of task %s; it cannot reach the queue", task["id"],
                        exc_info=True)
            return None
        self._attempt_env = tasktokens.attempt_env(token, self.server_url)
        return digest

    def _end_token(self, digest: str | None) -> None:
        self._attempt_env = tasktokens.attempt_env(None, None)
        if digest is None:
            return
        try:
            self.store.delete_task_token(digest)
        except Exception:  # noqa: BLE001 - refused anyway once its attempt is not RUNNING (tasktokens.owner_of)
            log.warning("could not delete a task token (refused anyway once its attempt has ended)", exc_info=True)

    def _record_outcome(self, task: dict, outcome: str, error: dict | None) -> None:
        task_id, attempt = task["id"], task["attempt"]
        what = f"the end of attempt {attempt} of task {task_id}"
        running = [TaskStatus.RUNNING]
        if outcome == "superseded":
            log.warning("ended attempt %d of task %s: the task went on without it (cancelled, or requeued while "
                        "this worker did not answer); nothing of it is recorded", attempt, task_id)
            return
        if outcome == "complete":
            try:
                size = self.state.result(task_id).stat().st_size
            except OSError:
                size = None
            moved = self._until_written(what, lambda: self.store.transition(
                task_id, TaskStatus.COMPLETE, running, attempt=attempt, result_size=size, error=None))
        elif outcome in ("cancelled", "timeout"):
            status = TaskStatus.CANCELLED if outcome == "cancelled" else TaskStatus.TIMEOUT
            moved = self._until_written(what, lambda: self.store.transition(
                task_id, status, running, attempt=attempt, error=error))
        else:
            if outcome == "interrupted":
                error = {"type": "Interrupted", "traceback": None,
                         "message": f"interrupted: worker {self.name} stopped during attempt {attempt}"}
                retry = True
            else:
                raised = error.pop("mro", None)  # the exception's class and bases (None: no exception, e.g. a crash)
                error.pop("peak_mib", None)
                final = error.pop("final", None)  # runner.py: the call cannot unpickle or bind, on any retry
                retry = final is None and retry_for_matches(task.get("retry_for"), raised)

            def end_attempt():
                if self.store.cancel_requested(task_id):  # a cancel is final, even for an interrupted attempt
                    cancelled = {"type": "Cancelled", "message": "cancelled while running", "traceback": None}
                    moved = self.store.transition(task_id, TaskStatus.CANCELLED, running, attempt=attempt,
                                                  error=cancelled)
                    return TaskStatus.CANCELLED if moved else None
                return retry_or_fail(self.store, task, error, retry, keep_place=outcome == "interrupted")

            moved = self._until_written(what, end_attempt)
            if moved is TaskStatus.RETRY:
                self._until_written(f"the next attempt of task {task_id}", lambda: requeue_attempt(
                    self.huey, task, keep_place=outcome == "interrupted") or True)
                self._ring_pool()
        if moved:
            self._changed(task_id)
        elif not self.stopping:  # the fence: the task is no longer at this attempt (or is no longer RUNNING)
            log.warning("discarded the end (%s) of attempt %d of task %s: the task went on without it (cancelled, "
                        "or requeued while this worker did not answer)", outcome, attempt, task_id)

    def _ring_pool(self) -> None:
        try:
            self.bells[self.hueys.index(self.huey)].ring()
        except Exception:  # noqa: BLE001 - idle workers look at the queue every half second anyway
            pass

    def _publish_files(self, task: dict) -> None:
        if not self.objects.remote:
            return
        try:
            superseded = self._superseded(task)
        except Exception:  # noqa: BLE001 - the store cannot say now: publish (the outcome's write is fenced)
            superseded = False
        if superseded:  # it ran on while this worker was stopped: its files must not replace its successor's
            log.warning("not publishing the files of attempt %d of task %s: the task went on without it",
                        task["attempt"], task["id"])
            return
        task_id = task["id"]
        for path in (self.state.result(task_id), self.state.display(task_id), self.state.error(task_id),
                     self.state.error_pickle(task_id), self.state.attempt_dir(task_id, task["attempt"])):
            try:
                self.objects.publish(path)
            except Exception:  # noqa: BLE001 - the attempt's outcome still counts; say what was not kept
                log.exception("could not copy %s of task %s to the object store", path.name, task_id)
        # The object store has them now: this machine's copies would only pile up.
        for path in self.state.task_files(task_id):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.state.outputs(task_id), ignore_errors=True)

    def _execute_in_child(self, task: dict) -> tuple[str, dict | None]:
        task_id = task["id"]
        for stale in (self.state.error(task_id), self.state.error_pickle(task_id), self.state.display(task_id)):
            stale.unlink(missing_ok=True)
        self._attempt_pid = None
        self._attempt_memory = None  # the keeper's report of the attempt's memory cgroup (cgroups.py)
        lease = None
        if task.get("image"):  # image=: built (or waited for) first, its log and progress the task's own
            lease, ended = ImageStep(self, task).run()
            if ended is not None:
                return ended
        try:
            return self._run_in_process(task, lease)
        finally:
            if lease is not None:
                lease.release()

    def _run_in_process(self, task: dict, lease) -> tuple[str, dict | None]:
        try:
            proc = self._start_task_process(task, image=lease)
        except Exception as exc:  # noqa: BLE001 - e.g. unreadable payload: fail the attempt
            return "failed", {"type": type(exc).__name__, "message": f"could not start the task: {exc}", "traceback": None}
        while True:
            self._current = proc
            try:
                outcome = self._supervise(task, proc)
            finally:  # whatever went wrong around it, the attempt's processes end with it
                self._current = None
                if proc.pidfd is not None and proc.busy:
                    proc.kill(self.kill_grace)
                self._collect_owner_files(task)
            if outcome[0] != "stale":
                return outcome
            # A warm process found its code stale (an edited function or local module): start afresh.
            proc = self._start_task_process(task, reuse=False, image=lease)

    def _start_task_process(self, task: dict, reuse: bool = True, image=None) -> TaskProcess:
        task_id = task["id"]
        attempt_dir = self.state.attempt_dir(task_id, task["attempt"])  # made by the task if it saves anything
        if limits.write_spec(task, attempt_dir, self.name):  # cpu= and memory=, applied by the keeper and task process
            self._say_enforcement(task)
        if self.objects.remote and not self.objects.fetch(self.state.payload(task_id)):
            raise FileNotFoundError(f"the payload of task {task_id} is not in the object store")
        make_private_dir(attempt_dir)  # holds the attempt's own log from its first byte
        paths = [str(self.state.payload(task_id)), str(self.state.result(task_id)),
                 str(self.state.error(task_id)), str(self.state.attempt_log(task_id, task["attempt"])),
                 str(attempt_dir)]
        with open(paths[0], "rb") as stream:
            header = payload.read_header(stream)
        self._fetch_blob(header)
        python = None if _same_interpreter(header) else header["python"]
        attempt_env = self._attempt_env
        if image is not None:  # the image's interpreter runs runner.py (warm there too: warmserve.py)
            python, attempt_env = image.python, {**self._attempt_env, **image_run_env(image)}
        keep_warm = float(task.get("keep_warm_seconds") or 0) if python is None or image is not None else 0.0
        # A warm process serves one owner's tasks only (what on_start loaded is theirs), run as them or not,
        # and one image (its interpreter and packages are the process's for good);
        # ... and one GPU set: a process that touched CUDA sees only the devices it started with.
        key = f"{_warm_key(header)}:{task.get('owner')}:{self._attempt_devices}" if keep_warm > 0 else None
        if key is not None and image is not None:
            key = f"{key}:image:{image.environment.get('hash')}"
        who = None
        if self.run_as_owner:
            self._owner = owner.lookup(task.get("owner"))
            key = key and f"{key}:{self._owner.name}"  # a warm process is its owner's for good
            warm_too = key is not None and reuse and key in self._warm
            copies = {}
            if warm_too:  # the warm process is the owner already: it reads copies, not the queue's files
                copies["payload"] = self.state.payload(task_id)
                if header.get("blob"):
                    copies["blob"] = self.state.blob(header["blob"])
            run = owner.prepare(attempt_dir, self._owner, copies)
            paths[1:3] = [str(run / "result"), str(run / "error")]
            who = self._owner.message()
            if warm_too:
                who["blob"] = str(run / "blob") if header.get("blob") else None
        if key is not None:
            warm = self._warm.pop(key, None)
            if warm is not None and reuse and warm.alive():
                try:
                    warm.dispatch([str(run / "payload"), *paths[1:]] if who else paths, None, warm=True, owner=who,
                                  env=attempt_env, devices=self._attempt_devices)
                    warm.keep_warm = keep_warm
                    return warm
                except OSError:
                    pass
            if warm is not None:
                self._retire(warm)
        proc, self._spare = self._spare, None
        if proc is not None:
            try:
                proc.dispatch(paths, python, warm=key is not None, owner=who, env=attempt_env,
                          devices=self._attempt_devices)
            except OSError:  # it died while waiting
                self._retire(proc)
                proc = None
        if proc is None:
            proc = self._fork()
            proc.dispatch(paths, python, warm=key is not None, owner=who, env=attempt_env,
                          devices=self._attempt_devices)
        proc.warm_key, proc.keep_warm = key, keep_warm
        if key is not None and image is not None:
            proc.hold_image(image)
        # owner: stats show a hub user only their own warm processes, and DELETE warm drops only those
        proc.warm_info = {"function": header.get("function"), "cwd": header.get("cwd"), "owner": task.get("owner")}
        if image is not None:
            proc.warm_info["image"] = image.environment.get("hash")
        return proc

    def _say_enforcement(self, task: dict) -> None:
        """The task's JSON says how its cpu= and memory= are held (``limits``); where the kernel cannot
        hold them (no writable cgroup), the worker says once that they are advisory."""
        held = cgroups.enforcement(task.get("memory"), task.get("cpu"))
        if not held["enforced"] and not getattr(self, "_said_advisory", False):
            self._said_advisory = True
            log.warning("cpu= and memory= are advisory on this worker (no writable cpuset or memory cgroup: %s); "
                        "a task can go past them", cgroups.probe().describe())
        try:
            self.store.update_fields(task["id"], limits=held)
        except Exception:  # noqa: BLE001 - only what the task's JSON shows; the attempt runs anyway
            log.warning("could not record how task %s's limits are held", task["id"])

    def _collect_owner_files(self, task: dict) -> None:
        """Run as its owner, the attempt wrote its result and error into a run folder of theirs: move them
        to where the server reads them (worker/owner.py)."""
        if self._owner is None:
            return
        task_id = task["id"]
        owner.collect(self.state.attempt_dir(task_id, task["attempt"]), self._owner, {
            "result": self.state.result(task_id), "result.display": self.state.display(task_id),
            "error": self.state.error(task_id), "error.pickle": self.state.error_pickle(task_id)})

    def _keep_warm(self, proc: TaskProcess) -> None:
        """A warm task process waits for the next attempt of its function (the oldest idle one goes first)."""
        proc.idle_since = time.monotonic()
        self._warm[proc.warm_key] = proc
        while len(self._warm) > MAX_WARM:
            oldest = min(self._warm, key=lambda k: self._warm[k].idle_since)
            self._retire(self._warm.pop(oldest))

    def _expire_warm(self, now: float) -> None:
        for key, proc in list(self._warm.items()):
            if now - proc.idle_since >= proc.keep_warm or not proc.alive():
                self._retire(self._warm.pop(key))

    def drop_warm(self, owners=None) -> None:
        """End the warm task processes (``owners``: only those serving these owners' tasks)."""
        for key in list(self._warm):
            if owners is None or self._warm[key].warm_info.get("owner") in owners:
                self._retire(self._warm.pop(key))

    def warm_processes(self) -> list[dict]:
        """What stats show of this worker's warm processes: which function, idle for how long."""
        now = time.monotonic()
        return [{**p.warm_info, "idle_s": round(now - p.idle_since, 1), "keep_warm_seconds": p.keep_warm,
                 "attempts": p.task_attempts, "pid": p.task_pid} for p in self._warm.values()]

    def _fork(self) -> TaskProcess:
        gc.freeze()  # keep the collector from touching (and so copying) the parent's objects
        if self._warm_up is False:
            self._warm_up = self._write_warm_up()
        return TaskProcess.fork(self.cuda_devices, self.kill_grace, self._warm_up)

    def _write_warm_up(self) -> str | None:
        """The do-nothing payload that fresh task processes run while they wait (task_process._warm_up)."""
        try:
            folder = make_private_dir(self.state.root / "warmup")
            path = folder / (re.sub(r"[^A-Za-z0-9._-]", "_", self.name) + ".payload")
            namespace = {"__name__": "__main__"}  # a notebook's function: it travels by value
            exec("def warm_up(*args, **kwargs):\n    return None\n", namespace)  # noqa: S102
            with os.fdopen(create_private_file(path), "wb") as f:
                f.write(payload.dumps_call(namespace["warm_up"]))
            return str(path)
        except Exception:  # noqa: BLE001 - a full disk, say: attempts start without the head start
            log.warning("could not write the warm-up payload; task processes start cold", exc_info=True)
            return None

    # -- blobs: a map()'s shared function part (jupyter_taskq/blobs.py) -----
    def _fetch_blob(self, header: dict) -> None:
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

    def _ensure_spare(self) -> None:
        if self._spare is None and not self.stopping:
            self._spare = self._fork()

    def _retire(self, proc: TaskProcess) -> None:
        """An idle keeper ends (with its task process, if warm); reaped later."""
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.retire()
        self._exited.append(proc.pid)

    def _drop_spare(self) -> None:
        self.drop_warm()
        if self._spare is not None:
            proc, self._spare = self._spare, None
            self._retire(proc)
        for pid in self._exited:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self._exited.clear()

    def _reap_exited(self) -> None:
        for pid in list(self._exited):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._exited.remove(pid)

    def _end_strays(self) -> None:
        """Kill what a dead keeper's tree left to us (we are a subreaper): any child that is not a keeper."""
        keepers = ({p.pid for p in (self._spare, self._current, *self._warm.values()) if p is not None}
                   | set(self._exited))
        strays = [pid for pid in children(os.getpid()) if pid not in keepers]
        if strays:
            log.warning("ending %d process(es) left behind by a task whose keeper died", len(strays))
            signal_all(strays, signal.SIGKILL)
            for pid in strays:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass

    def _supervise(self, task: dict, proc: TaskProcess) -> tuple[str, dict | None]:
        task_id = task["id"]
        deadline = time.monotonic() + task["timeout"] if task.get("timeout") else None
        io = AttemptWatcher(self.state, task, self.log_max_bytes, self.objects)
        next_fence_check = time.monotonic() + HEARTBEAT_INTERVAL
        while True:
            wait = POLL_INTERVAL if deadline is None else max(0.0, min(POLL_INTERVAL, deadline - time.monotonic()))
            if select.select([proc.done, proc.pidfd], [], [], wait)[0]:
                report = proc.read_report()
                if report is None:  # the keeper died without a word: its tree may come to us
                    code = self._keeper_died(proc)
                else:
                    code = report["code"]
                    self._attempt_pid = report.get("pid")
                    self._attempt_memory = report.get("memory")
                    if code == EXIT_STALE:
                        proc.retire()
                        self._exited.append(proc.pid)
                        return "stale", None
                    if report.get("warm") and proc.warm_key is not None and not self.stopping:
                        self._keep_warm(proc)
                    elif not report.get("warm") and self._spare is None and not self.stopping:
                        proc.warm_key = None
                        proc.release_image()  # its next task process is a fresh one, of whatever image
                        self._spare = proc  # the keeper serves the next attempt (in a fresh task process)
                    else:
                        self._retire(proc)
                self._collect_owner_files(task)
                io.sync(self.store)
                return self._outcome(task_id, code)
            self._housekeeping(task_id)
            if io.sync(self.store):
                self._changed(task_id)
            if self.stopping:
                proc.kill(self.kill_grace)
                return "interrupted", None
            if deadline is not None and time.monotonic() >= deadline:
                proc.kill(self.kill_grace)
                return "timeout", {"type": "Timeout", "message": f"exceeded its timeout of {task['timeout']:g} s",
                                   "traceback": None}
            if self.store.cancel_requested(task_id):
                proc.kill(self.kill_grace)
                return "cancelled", {"type": "Cancelled", "message": "cancelled while running", "traceback": None}
            if time.monotonic() >= next_fence_check:
                next_fence_check = time.monotonic() + HEARTBEAT_INTERVAL
                if self._superseded(task):
                    proc.kill(self.kill_grace)
                    return "superseded", None

    def _superseded(self, task: dict) -> bool:
        """Whether the task went on without this attempt: recovery took it back while this worker did not
        answer (stopped, or cut off from the store), so another copy may run now. This one must end."""
        current = self.store.get(task["id"])
        return (current is None or current["status"] != TaskStatus.RUNNING or current["attempt"] != task["attempt"]
                or current.get("worker_instance") != self.instance)

    def _keeper_died(self, proc: TaskProcess) -> int:
        try:
            _, status = os.waitpid(proc.pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = -signal.SIGKILL
        proc.retire()
        self._strays_until = time.monotonic() + STRAY_WATCH
        self._end_strays()
        return code

    def _outcome(self, task_id: str, code: int) -> tuple[str, dict | None]:
        if code == runner.EXIT_OK and self.state.result(task_id).exists():
            return "complete", None
        error_path = self.state.error(task_id)
        if code in (runner.EXIT_RAISED, runner.EXIT_SETUP) and error_path.exists():
            return "failed", json.loads(error_path.read_text())
        if code < 0:
            name = signal.Signals(-code).name
            hint = " (out of memory?)" if -code == signal.SIGKILL else ""
            message = f"the task's process was killed by {name}{hint}"
        else:
            message = f"the task's process exited with status {code} before finishing"
        return "failed", {"type": "Crashed", "message": message, "traceback": None}


def check_can_run_as_owners(state) -> None:
    """--run-as-owner: exit saying why if this worker cannot run tasks as their owners."""
    if os.geteuid() != 0:
        raise SystemExit(f"jupyter-taskq worker: --run-as-owner needs root (running as uid {os.geteuid()}): "
                         "only root can run each task as its owner's account")
    try:
        open_for_owners(state)
    except PermissionError as exc:
        raise SystemExit(f"jupyter-taskq worker: {exc}") from None


def _worker_error(exc: BaseException) -> dict:
    """The error of an attempt ended by a failure of its worker, not of the task."""
    return {"type": "WorkerError",
            "message": f"the worker failed around this attempt ({type(exc).__name__}: {exc}); the attempt was ended",
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}


def _warm_key(header: dict) -> str:
    """What a warm process may serve: attempts of the same function from the same notebook world
    (interpreter, working directory, sys.path, environment, cell sources), as the payload header says.
    What is each task's own (its seeds: jupyter_taskq/seeds.py) is no part of it: the function is the same."""
    defining = {k: v for k, v in header.items() if k not in PER_TASK_HEADER}
    return hashlib.sha256(json.dumps(defining, sort_keys=True, default=str).encode()).hexdigest()


@functools.lru_cache(maxsize=64)
def _real(path: str) -> str:
    """``realpath`` costs a dozen ``lstat`` calls; the same few interpreters come back every attempt."""
    return os.path.realpath(path)


def _same_interpreter(header: dict) -> bool:
    """Same binary and same environment (a venv's python is a symlink to its base's)."""
    same_binary = _real(header["python"]) == _real(sys.executable)
    return same_binary and _real(header.get("prefix", sys.prefix)) == _real(sys.prefix)


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
    parser.add_argument("--kill-grace", type=float, default=2.0)
    parser.add_argument("--log-max-bytes", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--die-with-parent", action="store_true")
    parser.add_argument("--run-as-owner", action="store_true",
                        help="run each attempt as its owner's Unix account (a hub service; needs root)")
    args = parser.parse_args(argv)
    if args.die_with_parent:
        die_with_parent()
    logging.basicConfig(level=logging.INFO, format=f"[taskq {args.name}] %(levelname)s %(message)s")
    backend = open_child_backend(Path(args.state_dir), args.redis, args.files_dir)
    if args.run_as_owner:
        check_can_run_as_owners(backend.state)
    machine = {int(d): m for d, m in json.loads(args.machine_gpus).items()} if args.machine_gpus else None
    worker = Worker(backend, args.name, args.pool, args.device, args.kill_grace, args.log_max_bytes, args.model,
                    args.run_as_owner, machine)
    worker.run()
    sys.exit(worker.exit_code)


if __name__ == "__main__":
    main()
