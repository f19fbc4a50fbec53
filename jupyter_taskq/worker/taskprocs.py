"""The task processes one worker holds: the spare made ready ahead, the warm ones, the one in use, the retired.

A fresh process per attempt is the rule (isolation); what makes it cheap is that the next one is
forked while the worker is idle (:meth:`TaskProcesses.ensure_spare`, never on an attempt's path) and
runs a do-nothing payload before its attempt comes (``task_process._warm_up``). ``keep_warm_seconds``
keeps a process with its imports for the next attempt of the same function. This module owns those
processes' lives: which one an attempt gets, which ones end, reaping them, and the strays of a keeper
that died (the worker is a subreaper).
"""

from __future__ import annotations

import gc
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Any, Literal

from .. import payload
from ..statedir import create_private_file, make_private_dir
from .proctree import children, kill_and_reap
from .task_process import TaskProcess

log = logging.getLogger("jupyter_taskq.worker")

STRAY_WATCH = 5.0  # seconds after a keeper died that the worker looks for its orphans


def _idle_since(proc: TaskProcess) -> float:
    """When a warm process (every one in ``TaskProcesses.warm``: keep_warm set it) went idle."""
    assert proc.idle_since is not None
    return proc.idle_since


class TaskProcesses:
    def __init__(self, root: Path, worker_name: str, cuda_devices: str, kill_grace: float, max_warm: int):
        self.root, self.worker_name = root, worker_name
        self.cuda_devices, self.kill_grace, self.max_warm = cuda_devices, kill_grace, max_warm
        self.spare: TaskProcess | None = None  # forked ahead, waiting for the next attempt
        self.current: TaskProcess | None = None  # the keeper of the attempt being run
        self.warm: dict[str, TaskProcess] = {}  # keep_warm_seconds: idle task processes by what they serve
        self._exited: list[int] = []  # keepers that reported or were retired, to reap
        self._strays_until = 0.0  # a keeper died abnormally: orphans of its tree may come to us
        self._warm_up: str | None | Literal[False] = False  # the warm-up payload's path (False: not written yet)

    # -- getting one --------------------------------------------------------
    def fork(self) -> TaskProcess:
        gc.freeze()  # keep the collector from touching (and so copying) the parent's objects
        if self._warm_up is False:
            self._warm_up = self._write_warm_up()
        return TaskProcess.fork(self.cuda_devices, self.kill_grace, self._warm_up)

    def ensure_spare(self) -> None:
        """Idle: fork the next attempt's keeper now, off any attempt's clock."""
        if self.spare is None:
            self.spare = self.fork()

    def take_spare(self) -> TaskProcess | None:
        proc, self.spare = self.spare, None
        return proc

    def take_warm(self, key: str) -> TaskProcess | None:
        """The warm process serving ``key``, if one is alive (a dead one is retired)."""
        warm = self.warm.pop(key, None)
        if warm is not None and not warm.alive():
            self.retire(warm)
            return None
        return warm

    # -- after an attempt ---------------------------------------------------
    def after_report(self, proc: TaskProcess, warm: bool, stopping: bool) -> None:
        """The attempt reported: keep its process warm, make its keeper the spare, or retire it."""
        if warm and proc.warm_key is not None and not stopping:
            self.keep_warm(proc)
        elif not warm and self.spare is None and not stopping:
            proc.warm_key = None
            proc.release_image()  # its next task process is a fresh one, of whatever image
            self.spare = proc  # the keeper serves the next attempt (in a fresh task process)
        else:
            self.retire(proc)

    def keep_warm(self, proc: TaskProcess) -> None:
        """A warm task process waits for the next attempt of its function (the oldest idle one goes first)."""
        assert proc.warm_key is not None  # after_report keeps only a process that serves a key
        proc.idle_since = time.monotonic()
        self.warm[proc.warm_key] = proc
        while len(self.warm) > self.max_warm:
            oldest = min(self.warm, key=lambda k: _idle_since(self.warm[k]))
            self.retire(self.warm.pop(oldest))

    def expire_warm(self, now: float) -> None:
        for key, proc in list(self.warm.items()):
            if now - _idle_since(proc) >= proc.keep_warm or not proc.alive():
                self.retire(self.warm.pop(key))

    def drop_warm(self, owners=None) -> None:
        """End the warm task processes (``owners``: only those serving these owners' tasks)."""
        for key in list(self.warm):
            if owners is None or self.warm[key].warm_info.get("owner") in owners:
                self.retire(self.warm.pop(key))

    def warm_processes(self) -> list[dict]:
        """What stats show of this worker's warm processes: which function, idle for how long."""
        now = time.monotonic()
        return [{**p.warm_info, "idle_s": round(now - _idle_since(p), 1), "keep_warm_seconds": p.keep_warm,
                 "attempts": p.task_attempts, "pid": p.task_pid} for p in self.warm.values()]

    # -- ending them --------------------------------------------------------
    def retire(self, proc: TaskProcess) -> None:
        """An idle keeper ends (with its task process, if warm); reaped later."""
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.retire()
        self._exited.append(proc.pid)

    def retired_itself(self, proc: TaskProcess) -> None:
        """A keeper that ends by itself (a stale warm process): only to reap."""
        proc.retire()
        self._exited.append(proc.pid)

    def drop_all(self) -> None:
        """The worker stops: every idle process ends, and is waited for."""
        self.drop_warm()
        spare = self.take_spare()
        if spare is not None:
            self.retire(spare)
        for pid in self._exited:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self._exited.clear()

    def tick(self, now: float) -> None:
        """Once a second: end the strays of a dead keeper; let idle warm processes go."""
        if now < self._strays_until:
            self._end_strays()
        if self.warm:
            self.expire_warm(now)

    def reap(self) -> None:
        """Reap the keepers that ended."""
        for pid in list(self._exited):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._exited.remove(pid)

    def keeper_died(self, proc: TaskProcess) -> int:
        """A keeper died without a word: its exit status; its tree's orphans come to us, and are ended."""
        try:
            _, status = os.waitpid(proc.pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = -signal.SIGKILL
        proc.retire()
        self._strays_until = time.monotonic() + STRAY_WATCH
        self._end_strays()
        return code

    def _end_strays(self) -> None:
        """Kill what a dead keeper's tree left to us (we are a subreaper): any child that is not a keeper."""
        keepers = ({p.pid for p in (self.spare, self.current, *self.warm.values()) if p is not None}
                   | set(self._exited))
        strays = [pid for pid in children(os.getpid()) if pid not in keepers]
        if strays:
            log.warning("ending %d process(es) left behind by a task whose keeper died", len(strays))
            kill_and_reap(strays)

    # -- the warm-up --------------------------------------------------------
    def _write_warm_up(self) -> str | None:
        """The do-nothing payload that fresh task processes run while they wait (task_process._warm_up)."""
        try:
            folder = make_private_dir(self.root / "warmup")
            path = folder / (re.sub(r"[^A-Za-z0-9._-]", "_", self.worker_name) + ".payload")
            namespace: dict[str, Any] = {"__name__": "__main__"}  # a notebook's function: it travels by value
            exec("def warm_up(*args, **kwargs):\n    return None\n", namespace)  # noqa: S102
            with os.fdopen(create_private_file(path), "wb") as f:
                f.write(payload.dumps_call(namespace["warm_up"]))
            return str(path)
        except Exception:  # noqa: BLE001 - a full disk, say: attempts start without the head start
            log.warning("could not write the warm-up payload; task processes start cold", exc_info=True)
            return None
