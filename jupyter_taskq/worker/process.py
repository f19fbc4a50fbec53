"""One worker: a process pinned to one GPU (or to none) that runs attempts one at a time.

The loop asks Huey for the next message of its pool and lets ``huey.execute``
apply expiry, revocation and retry scheduling; the attempt itself runs in a child
process (:mod:`.runner`) so that cancel and timeout can kill it and a crash takes
only that attempt. When the queue is empty the worker sleeps on its pool's
doorbell, so it wakes the moment work arrives and burns nothing while idle.

The worker never imports CUDA: forked children that use CUDA need a parent that
has not touched it.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import os
import select
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import dill  # noqa: F401 - imported once here, not in every forked attempt
from huey.signals import SIGNAL_EXPIRED

from .. import payload
from ..backend import Backend, wait_for_any
from ..machine import machine_size
from ..options import retry_for_matches
from ..queue import GPU_POOL, model_pool, set_attempt_runner
from ..status import WAITING, TaskStatus
from . import limits, runner
from .task_io import AttemptWatcher
from .task_process import TaskProcess, die_with_parent

log = logging.getLogger("jupyter_taskq.worker")

HEARTBEAT_INTERVAL = 1.0
SCHEDULE_INTERVAL = 0.5
POLL_INTERVAL = 0.25  # how often a running attempt checks for cancel and timeout


class AttemptFailed(Exception):
    """Raised to Huey so that it schedules the next attempt (its retries, delay and backoff)."""


class _HideAttemptFailed(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], AttemptFailed))


class Worker:
    def __init__(self, backend: Backend, name: str, pool: str, device: str | None = None, kill_grace: float = 2.0,
                 log_max_bytes: int = 10 * 1024 * 1024, model: str | None = None):
        self.state = backend.state
        self.objects = backend.objects
        self.name = name
        self.pool = pool
        self.model = model if pool == GPU_POOL and model else None
        # A GPU of a known model serves the tasks asking for that model first, then any GPU task.
        self.pools = [model_pool(self.model), pool] if self.model else [pool]
        self.cuda_devices = device if device is not None else ""
        self.kill_grace = kill_grace
        self.log_max_bytes = log_max_bytes
        self.instance = f"{name}:{socket.gethostname()}:{os.getpid()}:{time.time():.6f}"
        self.store = backend.open_store()
        self.hueys = [backend.open_queue(p) for p in self.pools]
        self.bells = [backend.work_bell(p) for p in self.pools]
        self.huey = self.hueys[0]  # the queue of the attempt being run (set as each is dequeued)
        self.events = backend.events_ringer()
        self.stopping = False
        self._next_heartbeat = 0.0
        self._next_schedule = 0.0
        self._spare: TaskProcess | None = None
        self._exited: list[int] = []  # children that reported their exit code, to reap

    # -- main loop --------------------------------------------------------
    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        logging.getLogger("huey").addFilter(_HideAttemptFailed())
        logging.getLogger("huey").setLevel(logging.WARNING)  # not a line per task
        set_attempt_runner(self._run_attempt)
        for huey in self.hueys:
            huey.signal(SIGNAL_EXPIRED)(self._on_expired)
        self.store.register_worker({
            "name": self.name, "instance": self.instance, "pool": self.pool, "device": self.cuda_devices or None,
            "model": self.model, **machine_size(),  # cpu= and memory= requests are checked against it
            "host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time(),
            "heartbeat_at": time.time(), "state": "idle", "current_task": None,
        })
        log.info("worker %s (pool %s, CUDA_VISIBLE_DEVICES=%r) ready", self.name, self.pool, self.cuda_devices)
        try:
            while not self.stopping:
                self._housekeeping(None)
                task = self._next_message()
                if task is None:
                    self._ensure_spare()
                    wait_for_any(self.bells, SCHEDULE_INTERVAL)
                    continue
                self.huey.execute(task)
        finally:
            self._drop_spare()
            self.store.remove_worker(self.name, self.instance)

    def _next_message(self):
        """The next message of the first of this worker's pools that has one (its model's first)."""
        for huey in self.hueys:
            task = huey.dequeue()
            if task is not None:
                self.huey = huey
                return task
        return None

    def _on_stop_signal(self, signum, frame) -> None:
        self.stopping = True

    def _housekeeping(self, running_task: str | None) -> None:
        """Heartbeat once a second; when idle, move delayed retries whose time has come onto the queue."""
        if self._exited:
            self._reap_exited()
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self.store.heartbeat(self.name, self.instance, "busy" if running_task else "idle", running_task)
            self._next_heartbeat = now + HEARTBEAT_INTERVAL
        if running_task is None and now >= self._next_schedule:
            self._next_schedule = now + SCHEDULE_INTERVAL
            for huey, bell in zip(self.hueys, self.bells):
                for task in huey.read_schedule():  # delayed retries whose time has come
                    huey.enqueue(task)
                    bell.ring()

    def _changed(self, task_id: str) -> None:
        self.events.ring(task_id.encode() + b"\n")

    def _on_expired(self, signal_name, huey_task, *args) -> None:
        task_id = huey_task.args[0]
        error = {"type": "Expired", "message": "not started before its expiry time", "traceback": None}
        if self.store.transition(task_id, TaskStatus.EXPIRED, WAITING, error=error):
            self._changed(task_id)

    # -- one attempt ------------------------------------------------------
    def _run_attempt(self, task_id: str, huey_task) -> None:
        task = self.store.claim(task_id, self.name, self.instance)
        if task is None:
            return  # cancelled, expired or deleted while it waited
        self._changed(task_id)
        attempt = task["attempt"]
        outcome, error = self._execute_in_child(task)
        if outcome == "failed":
            error = limits.memory_failure(task, error, self._attempt_pid) or error  # memory= ran out
        size = self.state.result(task_id).stat().st_size if outcome == "complete" else None
        self._publish_files(task)  # before the new status: whoever sees it can fetch them
        if outcome == "complete":
            if self.store.transition(task_id, TaskStatus.COMPLETE, [TaskStatus.RUNNING], attempt=attempt,
                                     result_size=size, error=None):
                self._changed(task_id)
        elif outcome == "interrupted":
            if self.store.release(task_id, attempt):
                self.huey.enqueue(huey_task)  # same retries left: a shutdown does not use one up
                self._changed(task_id)
        elif outcome in ("cancelled", "timeout"):
            status = TaskStatus.CANCELLED if outcome == "cancelled" else TaskStatus.TIMEOUT
            if self.store.transition(task_id, status, [TaskStatus.RUNNING], attempt=attempt, error=error):
                self._changed(task_id)
        else:
            raised = error.pop("mro", None)  # the exception's class and bases (None: no exception, e.g. a crash)
            error.pop("peak_mib", None)
            will_retry = bool(huey_task.retries) and retry_for_matches(task.get("retry_for"), raised)
            status = TaskStatus.RETRY if will_retry else TaskStatus.FAILED
            moved = self.store.transition(task_id, status, [TaskStatus.RUNNING], attempt=attempt, error=error)
            if moved:
                self._changed(task_id)
                if will_retry:
                    raise AttemptFailed(error["message"])

    def _publish_files(self, task: dict) -> None:
        if not self.objects.remote:
            return
        task_id = task["id"]
        for path in (self.state.result(task_id), self.state.error(task_id), self.state.error_pickle(task_id),
                     self.state.log(task_id), self.state.attempt_dir(task_id, task["attempt"])):
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
        for stale in (self.state.error(task_id), self.state.error_pickle(task_id)):
            stale.unlink(missing_ok=True)
        self._attempt_pid = None
        try:
            proc = self._start_task_process(task)
        except Exception as exc:  # noqa: BLE001 - e.g. unreadable payload: fail the attempt
            return "failed", {"type": type(exc).__name__, "message": f"could not start the task: {exc}", "traceback": None}
        self._attempt_pid = proc.pid
        return self._supervise(task, proc)

    def _start_task_process(self, task: dict) -> TaskProcess:
        task_id = task["id"]
        attempt_dir = self.state.attempt_dir(task_id, task["attempt"])  # made by the task if it saves anything
        limits.write_spec(task, attempt_dir, self.name)  # cpu= and memory=, applied by the task process
        if self.objects.remote and not self.objects.fetch(self.state.payload(task_id)):
            raise FileNotFoundError(f"the payload of task {task_id} is not in the object store")
        paths = [str(self.state.payload(task_id)), str(self.state.result(task_id)),
                 str(self.state.error(task_id)), str(self.state.log(task_id)), str(attempt_dir)]
        with open(paths[0], "rb") as stream:
            header = payload.read_header(stream)
        if not _same_interpreter(header) and os.access(header["python"], os.X_OK):
            return TaskProcess.spawn(header["python"], paths, self.cuda_devices)
        header.pop("function", None)
        world = json.dumps(header, sort_keys=True)
        proc, self._spare = self._spare, None
        if proc is not None and proc.world not in (None, world):
            self._retire(proc)  # it ran another notebook's tasks: start clean
            proc = None
        if proc is not None:
            try:
                proc.dispatch(paths, world)
                return proc
            except OSError:  # it died while waiting
                self._retire(proc)
        proc = TaskProcess.fork(self.cuda_devices)
        proc.dispatch(paths, world)
        return proc

    def _ensure_spare(self) -> None:
        if self._spare is None and not self.stopping:
            gc.freeze()  # keep the collector from touching (and so copying) the parent's objects
            self._spare = TaskProcess.fork(self.cuda_devices)

    def _retire(self, proc: TaskProcess) -> None:
        proc.retire()
        self._exited.append(proc.pid)

    def _drop_spare(self) -> None:
        if self._spare is not None:
            proc, self._spare = self._spare, None
            proc.retire()
            os.waitpid(proc.pid, 0)

    def _reap_exited(self) -> None:
        for pid in list(self._exited):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._exited.remove(pid)

    def _supervise(self, task: dict, proc: TaskProcess) -> tuple[str, dict | None]:
        task_id = task["id"]
        deadline = time.monotonic() + task["timeout"] if task.get("timeout") else None
        watch = [proc.pidfd] + ([proc.done] if proc.done is not None else [])
        io = AttemptWatcher(self.state, task, self.log_max_bytes, self.objects)
        while True:
            wait = POLL_INTERVAL if deadline is None else max(0.0, min(POLL_INTERVAL, deadline - time.monotonic()))
            ready = select.select(watch, [], [], wait)[0]
            if proc.done is not None and proc.done in ready:
                report = proc.read_report()
                if report is not None:  # finished; the process may take the next attempt
                    code, reusable = report
                    if reusable and not self.stopping:
                        self._spare = proc
                    else:
                        self._retire(proc)
                    io.sync(self.store)
                    return self._outcome(task_id, code)
            if ready:  # it died (or closed the pipe while dying)
                _, status = os.waitpid(proc.pid, 0)
                proc.retire()
                io.sync(self.store)
                return self._outcome(task_id, os.waitstatus_to_exitcode(status))
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
    parser.add_argument("--kill-grace", type=float, default=2.0)
    parser.add_argument("--log-max-bytes", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--die-with-parent", action="store_true")
    args = parser.parse_args(argv)
    if args.die_with_parent:
        die_with_parent()
    logging.basicConfig(level=logging.INFO, format=f"[taskq {args.name}] %(levelname)s %(message)s")
    backend = Backend.open(Path(args.state_dir), args.redis, args.files_dir)
    Worker(backend, args.name, args.pool, args.device, args.kill_grace, args.log_max_bytes, args.model).run()


if __name__ == "__main__":
    main()
