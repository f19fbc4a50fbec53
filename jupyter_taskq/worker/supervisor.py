"""Starts the workers of one machine, pins each to its GPU, restarts the ones that die.

One process per GPU slot with ``CUDA_VISIBLE_DEVICES`` set before Python starts
(so a task sees exactly its GPU, as ``cuda:0``), plus CPU workers that see none.
The supervisor also runs the recovery sweep: tasks of a dead worker go back to
the queue (or FAIL as "worker lost"), and waiting tasks past their expiry end
EXPIRED. A worker that misses its heartbeat is not necessarily dead (stopped, or
blocked on a write): the supervisor kills it, and everything below it, before the
sweep requeues its attempt, so a task never runs twice at once. The Jupyter server starts one
supervisor; ``jupyter taskq worker`` runs the same thing on its own.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ..backends import Backend
from ..recovery import expire_overdue_tasks, recover_lost_tasks
from ..storeerrors import keep_reserve
from ..workerconfig import DEFAULT_CONFIG, WorkerConfig
from .proctree import descendants, signal_all

log = logging.getLogger("jupyter_taskq.supervisor")

CHECK_INTERVAL = 0.2
SWEEP_INTERVAL = 1.0
SWEEP_BACKOFF = 5.0  # between sweeps while the store cannot be written
#: A worker's exit status when it stops because its batch job ends before the next task could (process.py).
DRAINED = 75
TREE_GONE_WAIT = 30.0  # longest wait for a killed worker's processes to go (one in a driver call may take a while)


@dataclass
class WorkerSpec:
    name: str
    pool: str
    device: str | None  # GPU index as text; None for a CPU worker
    model: str | None = None  # the GPU's model name, when known

    @property
    def cuda_visible_devices(self) -> str:
        return self.device if self.device is not None else ""


def plan_workers(gpus: list[int], workers_per_gpu: int, cpu_workers: int, prefix: str = "",
                 models: dict[int, str] | None = None) -> list[WorkerSpec]:
    specs = []
    for gpu in gpus:
        for slot in range(workers_per_gpu):
            suffix = f"-{slot}" if workers_per_gpu > 1 else ""
            specs.append(WorkerSpec(f"{prefix}gpu{gpu}{suffix}", "gpu", str(gpu), (models or {}).get(gpu)))
    specs += [WorkerSpec(f"{prefix}cpu{i}", "cpu", None) for i in range(cpu_workers)]
    return specs


@dataclass
class _Running:
    spec: WorkerSpec
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started: float = field(default=0.0)
    drained: bool = False  # exited with DRAINED: its job's time is nearly up, not restarted


class Supervisor:
    def __init__(self, backend: Backend, specs: list[WorkerSpec], config: WorkerConfig = DEFAULT_CONFIG):
        self.backend = backend
        self.config = config  # passed on to each worker as it is (--config)
        #: Seconds without a task after which the supervisor ends (0: never): a batch job's scale-down.
        self.idle_exit = config.idle_exit
        self._idle_since = time.monotonic()
        self.state = backend.state
        self.workers = [_Running(spec) for spec in specs]
        # Every GPU of the machine and its model: each GPU worker may take siblings for a gang (gpulocks.py).
        self.machine_gpus = {s.device: s.model for s in specs if s.device is not None}
        self.stale_after = config.heartbeat_timeout
        self.kill_grace = config.kill_grace
        self.store = backend.open_store()
        self.queues = backend.open_queues()
        self.events = backend.events_ringer()
        self.stopping = False
        self._warned = False  # the scheduler's warning came: ask each task running here to checkpoint
        self._asked: set[str] = set()  # the tasks asked already (once each)
        self._next_ask = 0.0

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGUSR1, self._on_warning)  # Slurm's --signal=B:USR1@N before the time limit
        if not self._own_state_dir():
            return
        log.info("supervising %d workers in %s", len(self.workers), self.state.root)
        self._idle_since = time.monotonic()  # idle from now: not while waiting for the state directory
        next_sweep = 0.0
        sweep_failing = False
        try:
            while not self.stopping:
                now = time.monotonic()
                for running in self.workers:
                    self._keep_alive(running, now)
                if self._warned and now >= self._next_ask:
                    self._next_ask = now + 1.0
                    self._ask_to_checkpoint()
                if self.workers and all(r.drained for r in self.workers):
                    log.info("every worker has drained (the job's time is nearly up): ending")
                    break
                if now >= next_sweep:
                    next_sweep = now + SWEEP_INTERVAL
                    try:
                        self.sweep()
                        sweep_failing = False
                        if self._idle_too_long(now):
                            log.info("no task for %g s: ending (idle exit)", self.idle_exit)
                            break
                    except Exception as exc:  # noqa: BLE001 - a full disk or Redis outage: sweep again later
                        if not sweep_failing:
                            log.error("recovery sweep failed (%s: %s); trying again every %g s",
                                      type(exc).__name__, exc, SWEEP_BACKOFF)
                            sweep_failing = True
                        next_sweep = now + SWEEP_BACKOFF
                time.sleep(CHECK_INTERVAL)
        finally:
            self.stop_workers()

    def _own_state_dir(self) -> bool:
        """One supervisor per state directory: another one's workers would share our worker names.

        A second supervisor (a server started while `jupyter taskq worker` runs) waits,
        and takes over when the first one stops.
        """
        self._lock = os.open(self.state.root / "supervisor.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        announced = False
        while not self.stopping:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if not announced:
                    log.info("another supervisor runs the workers of %s; waiting to take over", self.state.root)
                    announced = True
                time.sleep(1.0)
        return False

    def sweep(self) -> None:
        keep_reserve(self.state.root)  # given up by a delete on a full disk: back once there is room
        self.end_stalled_workers()  # first: the sweep requeues their attempts only once they are gone
        ring = lambda task_id: self.events.ring(task_id.encode() + b"\n")  # noqa: E731
        for task_id in recover_lost_tasks(self.store, self.queues, self.stale_after, ring):
            log.warning("task %s lost its worker; requeued or failed", task_id)
        expire_overdue_tasks(self.store, ring)

    def _idle_too_long(self, now: float) -> bool:
        """Whether every worker of ours has been without a task for ``idle_exit`` seconds."""
        if not self.idle_exit:
            return False
        names = {r.spec.name for r in self.workers}
        busy = [w for w in self.store.workers() if w["name"] in names and w.get("current_task")]
        if busy:
            self._idle_since = now
        return now - self._idle_since >= self.idle_exit

    def _on_warning(self, signum, frame) -> None:
        """The scheduler's warning before the end (time limit, preemption). Only a flag: the main loop does
        the asking, since a handler that used the store could interrupt the loop mid-call on the same
        connection pool (and deadlock on its lock)."""
        self._warned = True

    def _ask_to_checkpoint(self) -> None:
        """Ask each task running on our workers to checkpoint now (``jupyter_taskq.checkpoint_requested()``
        turns True in it), once each; repeated every second until the job ends, so a task that started
        just before the warning (not yet in its worker's heartbeat) or after it is asked too."""
        from ..checkpoints import request_checkpoint

        names = {r.spec.name for r in self.workers}
        try:
            for w in self.store.workers():
                task = w.get("current_task")
                if w["name"] in names and task and task not in self._asked:
                    request_checkpoint(self.state.outputs(task))
                    self._asked.add(task)
                    log.warning("asked task %s to checkpoint: the job ends soon", task)
        except Exception as exc:  # noqa: BLE001 - a Redis outage: try again in a second
            log.error("could not ask the running tasks to checkpoint: %s", exc)

    def end_stalled_workers(self) -> None:
        """Kill each worker of ours that has missed its heartbeat, with its keepers and task processes.

        A worker that is not heartbeating may still be running its attempt (SIGSTOP, a write blocked on a
        lock, a swap storm); requeueing that attempt would make a second running copy (two GPUs, two
        writers of the same files). Only a worker that has registered as this very process is judged
        (one starting up has not heartbeated yet). :func:`jupyter_taskq.recovery.recover_lost_tasks`
        leaves a worker of this machine alone while its process exists, so it requeues after this."""
        now, host = time.time(), socket.gethostname()
        rows = {w["name"]: w for w in self.store.workers()}
        for running in self.workers:
            proc, row = running.proc, rows.get(running.spec.name)
            if proc is None or proc.poll() is not None or row is None or row.get("pid") != proc.pid \
                    or row.get("host") != host or (row.get("heartbeat_at") or 0) >= now - self.stale_after:
                continue
            log.error("worker %s (pid %d) has not heartbeated for %.0f s (stopped or hung%s): killing it and its "
                      "task processes; its attempt is then requeued", running.spec.name, proc.pid,
                      now - (row.get("heartbeat_at") or 0),
                      f", running task {row['current_task']}" if row.get("current_task") else "")
            self._kill_tree(proc)

    def _kill_tree(self, proc: subprocess.Popen) -> None:
        """SIGKILL a worker and every process below it, and wait until they are gone.

        The tree is frozen first (SIGSTOP until no new process shows up: a stopped process cannot fork),
        so nothing started meanwhile escapes; the worker goes last, as the sweep judges by its process."""
        frozen: set[int] = set()
        while True:
            tree = {proc.pid, *descendants(proc.pid)}
            if tree <= frozen:
                break
            signal_all(tree - frozen, signal.SIGSTOP)
            frozen |= tree
        below = frozen - {proc.pid}
        signal_all(below, signal.SIGKILL)
        deadline = time.monotonic() + TREE_GONE_WAIT
        while (left := [p for p in below if _exists(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            log.error("processes %s of a killed worker are still there after %g s", left, TREE_GONE_WAIT)
        proc.kill()
        proc.wait()

    def _keep_alive(self, running: _Running, now: float) -> None:
        proc = running.proc
        if proc is not None and proc.poll() is None:
            return
        if running.drained:
            return
        if proc is not None and proc.returncode == DRAINED:
            log.info("worker %s drained (its job ends before the next task could); not restarted", running.spec.name)
            running.drained, running.proc = True, None
            return
        if proc is not None:
            log.warning("worker %s exited with %s; restarting", running.spec.name, proc.returncode)
            # A quick death again and again backs off, up to 30 s between starts.
            quick = now - running.started < 10
            running.restarts = running.restarts + 1 if quick else 0
            running.next_start = now + (min(30.0, 0.5 * 2 ** running.restarts) if quick else 0)
            running.proc = None
        if now >= running.next_start:
            running.proc = self._start(running.spec)
            running.started = now

    def _start(self, spec: WorkerSpec) -> subprocess.Popen:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=spec.cuda_visible_devices, PYTHONUNBUFFERED="1",
                   **self.backend.child_env())
        cmd = [sys.executable, "-m", "jupyter_taskq.worker.process", *self.backend.child_args(),
               "--name", spec.name, "--pool", spec.pool, "--config", self.config.to_json(), "--die-with-parent"]
        if spec.device is not None:
            cmd += ["--device", spec.device, "--machine-gpus", json.dumps(self.machine_gpus)]
        if spec.model:
            cmd += ["--model", spec.model]
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)

    def _on_stop(self, signum, frame) -> None:
        self.stopping = True

    def stop_workers(self) -> None:
        procs = [r.proc for r in self.workers if r.proc is not None and r.proc.poll() is None]
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + self.kill_grace + 5
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _exists(pid: int) -> bool:
    """Whether ``pid`` is a process that has not died yet (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")
