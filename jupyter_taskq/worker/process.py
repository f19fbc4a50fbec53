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
import ctypes
import gc
import json
import logging
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path

import dill  # noqa: F401 - imported once here, not in every forked attempt
from huey.signals import SIGNAL_EXPIRED

from .. import payload
from ..doorbell import events_bell, work_bell
from ..queue import open_queue, set_attempt_runner
from ..statedir import StateDir, make_private_dir
from .task_io import AttemptWatcher
from ..status import WAITING, TaskStatus
from ..store import SqliteTaskStore
from . import runner

log = logging.getLogger("jupyter_taskq.worker")

HEARTBEAT_INTERVAL = 1.0
SCHEDULE_INTERVAL = 0.5
POLL_INTERVAL = 0.25  # how often a running attempt checks for cancel and timeout
_PR_SET_PDEATHSIG = 1


class AttemptFailed(Exception):
    """Raised to Huey so that it schedules the next attempt (its retries, delay and backoff)."""


class _HideAttemptFailed(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], AttemptFailed))


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: ask the kernel to send ``sig`` when our parent dies, so nothing outlives it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Worker:
    def __init__(self, state: StateDir, name: str, pool: str, device: str | None = None, kill_grace: float = 2.0,
                 log_max_bytes: int = 10 * 1024 * 1024):
        self.state = state
        self.name = name
        self.pool = pool
        self.cuda_devices = device if device is not None else ""
        self.kill_grace = kill_grace
        self.log_max_bytes = log_max_bytes
        self.instance = f"{name}:{socket.gethostname()}:{os.getpid()}:{time.time():.6f}"
        self.store = SqliteTaskStore(state.db)
        self.huey = open_queue(state, pool)
        self.work_bell = work_bell(state.bells, pool)
        self.events = events_bell(state.bells)
        self.stopping = False
        self._next_heartbeat = 0.0
        self._next_schedule = 0.0
        self._spare: _Child | None = None
        self._exited: list[int] = []  # children that reported their exit code, to reap

    # -- main loop --------------------------------------------------------
    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        logging.getLogger("huey").addFilter(_HideAttemptFailed())
        set_attempt_runner(self._run_attempt)
        self.huey.signal(SIGNAL_EXPIRED)(self._on_expired)
        self.store.register_worker({
            "name": self.name, "instance": self.instance, "pool": self.pool, "device": self.cuda_devices or None,
            "host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time(),
            "heartbeat_at": time.time(), "state": "idle", "current_task": None,
        })
        log.info("worker %s (pool %s, CUDA_VISIBLE_DEVICES=%r) ready", self.name, self.pool, self.cuda_devices)
        try:
            while not self.stopping:
                self._housekeeping("idle", None)
                task = self.huey.dequeue()
                if task is None:
                    self._ensure_spare()
                    self.work_bell.wait(SCHEDULE_INTERVAL)
                    continue
                self.huey.execute(task)
                self._next_heartbeat = 0.0  # report "idle" again promptly
        finally:
            self._drop_spare()
            self.store.remove_worker(self.name, self.instance)

    def _on_stop_signal(self, signum, frame) -> None:
        self.stopping = True

    def _housekeeping(self, state: str, task_id: str | None) -> None:
        if self._exited:
            self._reap_exited()
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self.store.heartbeat(self.name, self.instance, state, task_id)
            self._next_heartbeat = now + HEARTBEAT_INTERVAL
        if state == "idle" and now >= self._next_schedule:
            self._next_schedule = now + SCHEDULE_INTERVAL
            for task in self.huey.read_schedule():  # delayed retries whose time has come
                self.huey.enqueue(task)
                self.work_bell.ring()

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
        self.store.heartbeat(self.name, self.instance, "busy", task_id)
        outcome, error = self._execute_in_child(task)
        if outcome == "complete":
            size = self.state.result(task_id).stat().st_size
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
            will_retry = bool(huey_task.retries)
            status = TaskStatus.RETRY if will_retry else TaskStatus.FAILED
            moved = self.store.transition(task_id, status, [TaskStatus.RUNNING], attempt=attempt, error=error)
            if moved:
                self._changed(task_id)
                if will_retry:
                    raise AttemptFailed(error["message"])

    def _execute_in_child(self, task: dict) -> tuple[str, dict | None]:
        task_id = task["id"]
        for stale in (self.state.error(task_id), self.state.error_pickle(task_id)):
            stale.unlink(missing_ok=True)
        try:
            child = self._start_child(task)
        except Exception as exc:  # noqa: BLE001 - e.g. unreadable payload: fail the attempt
            return "failed", {"type": type(exc).__name__, "message": f"could not start the task: {exc}", "traceback": None}
        try:
            return self._supervise_child(task, child)
        finally:
            child.close()

    def _start_child(self, task: dict) -> "_Child":
        task_id = task["id"]
        attempt_dir = self.state.attempt_dir(task_id, task["attempt"])
        make_private_dir(attempt_dir)
        paths = [str(self.state.payload(task_id)), str(self.state.result(task_id)),
                 str(self.state.error(task_id)), str(self.state.log(task_id)), str(attempt_dir)]
        with open(paths[0], "rb") as stream:
            header = payload.read_header(stream)
        python = header["python"]
        if not _same_interpreter(header) and os.access(python, os.X_OK):
            import subprocess

            # The notebook's own interpreter (a conda env): its packages, our runner.
            pid = subprocess.Popen(
                [python, runner.__file__, *paths, self.cuda_devices],
                start_new_session=True, preexec_fn=die_with_parent, stdin=subprocess.DEVNULL,
            ).pid
            return _Child(pid, None, None)
        request = json.dumps(paths).encode()
        child, self._spare = self._spare, None
        if child is not None:
            try:
                return child.dispatch(request)
            except OSError:  # the spare died: reap it and fork afresh
                child.close()
                os.waitpid(child.pid, 0)
        return self._fork_child().dispatch(request)

    def _fork_child(self) -> "_Child":
        """Fork a child that waits for an attempt's file paths on a pipe, then runs it.

        Forking costs a few ms; the worker forks the next child while idle (its
        "spare"), so a task that arrives finds a process ready. The child reports
        its exit code on a second pipe before exiting, because tearing down a
        forked process's memory takes milliseconds that nobody needs to wait for.
        """
        request_r, request_w = os.pipe()
        done_r, done_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 3
            try:
                os.close(request_w)
                os.close(done_r)
                os.setpgid(0, 0)
                die_with_parent()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                with os.fdopen(request_r, "rb") as pipe:
                    request = pipe.read()
                code = runner.run_attempt(*json.loads(request), self.cuda_devices, payload) if request else 0
                os.write(done_w, bytes([code]))
            finally:
                os._exit(code)
        os.close(request_r)
        os.close(done_w)
        return _Child(pid, request_w, done_r)

    def _ensure_spare(self) -> None:
        if self._spare is None and not self.stopping:
            gc.freeze()  # keep the collector from touching (and so copying) the parent's objects
            self._spare = self._fork_child()

    def _drop_spare(self) -> None:
        if self._spare is not None:
            child, self._spare = self._spare, None
            child.close()  # EOF on its request pipe: the spare exits
            os.waitpid(child.pid, 0)

    def _reap_exited(self) -> None:
        for pid in list(self._exited):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._exited.remove(pid)

    def _supervise_child(self, task: dict, child: "_Child") -> tuple[str, dict | None]:
        task_id = task["id"]
        deadline = time.monotonic() + task["timeout"] if task.get("timeout") else None
        watch = [child.pidfd] + ([child.done] if child.done is not None else [])
        io = AttemptWatcher(self.state, task, self.log_max_bytes)
        while True:
            wait = POLL_INTERVAL if deadline is None else max(0.0, min(POLL_INTERVAL, deadline - time.monotonic()))
            ready = select.select(watch, [], [], wait)[0]
            if child.done in ready:
                reported = os.read(child.done, 1)
                if reported:  # it finished and is exiting: reap it later
                    self._exited.append(child.pid)
                    io.sync(self.store)
                    return self._outcome(task_id, reported[0])
            if ready:  # it died (or closed the pipe while dying)
                _, status = os.waitpid(child.pid, 0)
                io.sync(self.store)
                return self._outcome(task_id, os.waitstatus_to_exitcode(status))
            self._housekeeping("busy", task_id)
            if io.sync(self.store):
                self._changed(task_id)
            if self.stopping:
                self._kill(child)
                return "interrupted", None
            if deadline is not None and time.monotonic() >= deadline:
                self._kill(child)
                return "timeout", {"type": "Timeout", "message": f"exceeded its timeout of {task['timeout']:g} s",
                                   "traceback": None}
            if self.store.cancel_requested(task_id):
                self._kill(child)
                return "cancelled", {"type": "Cancelled", "message": "cancelled while running", "traceback": None}

    def _kill(self, child: "_Child") -> None:
        """SIGTERM the attempt's process group, SIGKILL it after the grace period."""
        for sig, grace in ((signal.SIGTERM, self.kill_grace), (signal.SIGKILL, None)):
            try:
                os.killpg(child.pid, sig)
            except ProcessLookupError:
                pass
            if grace is None or select.select([child.pidfd], [], [], grace)[0]:
                break
        os.waitpid(child.pid, 0)

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


class _Child:
    """A task process: its pid, a pidfd to wait on, and the pipes to a forked child."""

    def __init__(self, pid: int, request: int | None, done: int | None):
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.request = request
        self.done = done

    def dispatch(self, request: bytes) -> "_Child":
        os.write(self.request, request)
        os.close(self.request)
        self.request = None
        return self

    def close(self) -> None:
        for name in ("request", "done", "pidfd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


def _same_interpreter(header: dict) -> bool:
    """Same binary and same environment (a venv's python is a symlink to its base's)."""
    same_binary = os.path.realpath(header["python"]) == os.path.realpath(sys.executable)
    return same_binary and os.path.realpath(header.get("prefix", sys.prefix)) == os.path.realpath(sys.prefix)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one jupyter-taskq worker (normally started by the supervisor).")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--pool", required=True, choices=["cpu", "gpu"])
    parser.add_argument("--device", default=None, help="the GPU index this worker is pinned to")
    parser.add_argument("--kill-grace", type=float, default=2.0)
    parser.add_argument("--log-max-bytes", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--die-with-parent", action="store_true")
    args = parser.parse_args(argv)
    if args.die_with_parent:
        die_with_parent()
    logging.basicConfig(level=logging.INFO, format=f"[taskq {args.name}] %(levelname)s %(message)s")
    state = StateDir.create(Path(args.state_dir))
    Worker(state, args.name, args.pool, args.device, args.kill_grace, args.log_max_bytes).run()


if __name__ == "__main__":
    main()
