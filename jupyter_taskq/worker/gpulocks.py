"""This machine's GPUs as one allocator that its per-GPU workers share: a kernel lock per device.

Why a machine-level allocator and not "a worker that claims its siblings" by messages: the GPUs a
gang holds must be freed whatever ends its attempt, its worker's death (SIGKILL, OOM) included, and
nothing in the queue can be trusted to run then. POSIX record locks (``fcntl.lockf``) are: the kernel
drops a process's locks when it dies, and a forked keeper or task process does not inherit them. So:

* ``gpu<N>.lock``: held *shared* by each worker slot running a gpu=1 task on GPU N (several slots
  may share a GPU: ``workers_per_gpu``), *exclusively* by the worker running a gang that includes N.
  A worker whose own GPU another worker holds exclusively is *lent*: it takes no work until the lock
  is released, and says which task holds its GPU.
* ``plan.lock``: one machine-wide mutex around planning and taking locks, so that every worker of
  the machine decides from the same state (:mod:`jupyter_taskq.gangplan`); releasing needs no mutex.
* ``gpu<N>.holders``: who holds GPU N (task, devices, the end of its timeout), for the planner's
  reserved start and for what the panel shows. A record is believed only while the lock is held.

The directory is the worker's state directory's (one per machine: docs/multi-machine.md), 0700, its
files 0600. A worker holding one process's lock must never close another descriptor of that file
(POSIX drops all of the process's locks on it then): each file is opened once per worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from ..gangplan import Device
from ..statedir import make_private_dir


class MachineGpus:
    def __init__(self, root: Path, devices: dict[int, str | None], mine: int, worker: str):
        self.dir = make_private_dir(root)
        self.models = dict(devices)
        self.mine = mine
        self.worker = worker
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        self._fds = {d: os.open(self.dir / f"gpu{d}.lock", flags, 0o600) for d in self.models}
        self._mutex = os.open(self.dir / "plan.lock", flags, 0o600)
        self.held: tuple[int, ...] = ()  # the devices this worker's attempt holds
        self.task: str | None = None
        self.until: float | None = None  # when the held devices' task ends at the latest (its timeout)
        with self.planning():
            for d in self.models:  # records of an earlier process of this worker are stale
                self._write_holder(d, None)

    # -- the mutex ----------------------------------------------------------------
    @contextlib.contextmanager
    def planning(self):
        fcntl.lockf(self._mutex, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._mutex, fcntl.LOCK_UN)

    def _try(self, device: int, exclusive: bool) -> bool:
        try:
            fcntl.lockf(self._fds[device], (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    # -- under planning() ---------------------------------------------------------
    def snapshot(self) -> list[Device]:
        """Each GPU of the machine: free, or busy (and until when, and with which task)."""
        devices = []
        for d, model in sorted(self.models.items()):
            if d in self.held:  # this worker's own: until when, as its holder record says to everyone else
                devices.append(Device(d, model, free=False, until=self.until, task=self.task))
                continue
            if self._try(d, exclusive=True):
                fcntl.lockf(self._fds[d], fcntl.LOCK_UN)
                self._holders_path(d).unlink(missing_ok=True)  # nobody holds it: any record is a dead worker's
                devices.append(Device(d, model, free=True))
                continue
            holders = self._holders(d).values()
            ends = [h.get("until") for h in holders]
            until = None if not ends or None in ends else max(ends)
            shareable = d == self.mine and self._try(d, exclusive=False)
            if shareable:
                fcntl.lockf(self._fds[d], fcntl.LOCK_UN)
            tasks = sorted({h["task"] for h in holders if h.get("task")})
            devices.append(Device(d, model, free=False, until=until, shareable=shareable,
                                  task=tasks[0] if tasks else None))
        return devices

    def take(self, devices: tuple[int, ...], task_id: str, timeout: float | None) -> bool:
        """Hold ``devices`` for ``task_id`` (exclusively when more than one); False, holding nothing, if
        one of them is taken."""
        exclusive = len(devices) > 1
        got: list[int] = []
        for d in devices:
            if not self._try(d, exclusive):
                for g in got:
                    fcntl.lockf(self._fds[g], fcntl.LOCK_UN)
                return False
            got.append(d)
        self.held, self.task = tuple(devices), task_id
        self.until = time.time() + timeout if timeout else None
        record = {"task": task_id, "devices": list(devices), "until": self.until}
        for d in devices:
            self._write_holder(d, record)
        return True

    # -- any time -------------------------------------------------------------------
    def release(self) -> None:
        """Free what this worker holds (the kernel does it too if the worker dies)."""
        if not self.held:
            return
        held, self.held, self.task, self.until = self.held, (), None, None
        with self.planning():
            for d in held:
                self._write_holder(d, None)
                fcntl.lockf(self._fds[d], fcntl.LOCK_UN)

    def lent_to(self) -> dict | None:
        """The record of the gang that holds this worker's own GPU (another worker's), or None."""
        if self.mine in self.held:
            return None
        with self.planning():
            if self._try(self.mine, exclusive=False):
                fcntl.lockf(self._fds[self.mine], fcntl.LOCK_UN)
                return None
            holders = list(self._holders(self.mine).values())
        return holders[0] if holders else {"task": None, "devices": [self.mine], "until": None}

    # -- holder records ---------------------------------------------------------------
    def _holders_path(self, device: int) -> Path:
        return self.dir / f"gpu{device}.holders"

    def _holders(self, device: int) -> dict:
        try:
            with open(self._holders_path(device)) as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write_holder(self, device: int, record: dict | None) -> None:
        holders = self._holders(device)
        if record is None and self.worker not in holders:
            return
        if record is None:
            holders.pop(self.worker, None)
        else:
            holders[self.worker] = record
        path = self._holders_path(device)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(holders, f)
        os.replace(tmp, path)
