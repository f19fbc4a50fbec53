"""The processes that run attempts, forked from a worker that never touches user code or CUDA.

A forked task process reads attempt requests (file paths) from a pipe, runs each
with :func:`runner.run_attempt`, and reports ``(exit code, reusable)`` on another
pipe before it does anything else, so the worker learns the outcome without
waiting for a process teardown. Forking costs milliseconds, so the worker keeps
one process ready (forked while idle) and may hand a finished process the next
attempt, but only when that is safe: same notebook world (interpreter, working
directory, sys.path, environment), the last attempt returned normally, imported
no module and left no thread behind (so edited modules are never stale and
nothing leaks between tasks), and fewer than ``MAX_ATTEMPTS`` so far. Anything
else gets a fresh fork. Killing the process (cancel, timeout) kills its whole
process group.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import struct
import subprocess
import sys
import threading

from .. import payload
from . import runner

MAX_ATTEMPTS = 100
_LEN = struct.Struct(">I")
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: ask the kernel to send ``sig`` when our parent dies, so nothing outlives it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class TaskProcess:
    def __init__(self, pid: int, request: int | None = None, done: int | None = None):
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.request = request  # write end: attempt requests (None for a one-shot process)
        self.done = done  # read end: (exit code, reusable) per attempt
        self.world: str | None = None  # the notebook world it has run attempts in
        self.attempts = 0

    @classmethod
    def fork(cls, cuda_devices: str) -> "TaskProcess":
        request_r, request_w = os.pipe()
        done_r, done_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 0
            try:
                os.close(request_w)
                os.close(done_r)
                os.setpgid(0, 0)
                die_with_parent()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _serve(request_r, done_w, cuda_devices)
            except BaseException:  # noqa: BLE001 - report nothing more; the worker sees the exit
                code = 3
            finally:
                os._exit(code)
        os.close(request_r)
        os.close(done_w)
        return cls(pid, request_w, done_r)

    @classmethod
    def spawn(cls, python: str, paths: list[str], cuda_devices: str) -> "TaskProcess":
        """One attempt in another interpreter (the notebook's conda env): its packages, our runner."""
        proc = subprocess.Popen([python, runner.__file__, *paths, cuda_devices], start_new_session=True,
                                preexec_fn=die_with_parent, stdin=subprocess.DEVNULL)
        return cls(proc.pid)

    def dispatch(self, paths: list[str], world: str) -> None:
        message = json.dumps(paths).encode()
        os.write(self.request, _LEN.pack(len(message)) + message)
        self.world = world
        self.attempts += 1

    def read_report(self) -> tuple[int, bool] | None:
        """After ``done`` is readable: the attempt's (exit code, reusable), or None if the process died."""
        report = os.read(self.done, 2)
        if len(report) < 2:
            return None
        return report[0], bool(report[1]) and self.attempts < MAX_ATTEMPTS

    def retire(self) -> None:
        """Close our ends: an idle forked process reads EOF and exits (reap its pid afterwards)."""
        for name in ("request", "done", "pidfd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def kill(self, grace: float) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; reaps it."""
        import select

        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            if wait is None or select.select([self.pidfd], [], [], wait)[0]:
                break
        os.waitpid(self.pid, 0)
        self.retire()


def _serve(request_fd: int, done_fd: int, cuda_devices: str) -> None:
    base_path = list(sys.path)
    with os.fdopen(request_fd, "rb") as requests:
        while True:
            prefix = requests.read(_LEN.size)
            if len(prefix) < _LEN.size:
                return  # the worker retired us
            paths = json.loads(requests.read(_LEN.unpack(prefix)[0]))
            sys.path[:] = base_path
            modules, threads = len(sys.modules), threading.active_count()
            code = runner.run_attempt(*paths, cuda_devices, payload)
            reusable = code == runner.EXIT_OK and len(sys.modules) == modules and threading.active_count() == threads
            os.write(done_fd, bytes([code, reusable]))
