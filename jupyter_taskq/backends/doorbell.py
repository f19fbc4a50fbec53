"""Doorbells: named pipes that wake a sleeping process the moment there is news (the SQLite backend's bells).

Huey's consumer polls (0.1 s, backing off to 10 s when idle), which makes a
trivial task take 55-86 ms. Instead, whoever enqueues rings the pool's bell and
an idle worker wakes at once; workers ring the server's bell with the id of a
task whose state changed, so long-polling clients hear about it at once. An idle
queue sleeps in ``select`` and burns no CPU. Ringing never blocks: a full pipe
means the listener is already far behind and will look at the queue anyway.
"""

from __future__ import annotations

import errno
import hashlib
import re
import os
import select
import stat
import time
from pathlib import Path

from ..statedir import FILE_MODE
from .base import Bell


def _ensure_fifo(path: Path) -> None:
    try:
        os.mkfifo(path, FILE_MODE)
    except FileExistsError:
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            raise RuntimeError(f"{path} exists and is not a FIFO") from None


class Doorbell(Bell):
    """One FIFO; any process may ring it, one or more processes listen on it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        _ensure_fifo(self.path)
        self._write_fd: int | None = None
        self._read_fd: int | None = None

    # -- ringing ----------------------------------------------------------
    def ring_times(self, n: int) -> None:
        """Wake up to ``n`` listeners (one per ring)."""
        self.ring(b"." * max(1, n))

    def ring(self, message: bytes = b".") -> None:
        """Send ``message`` (under 4 KiB, so it arrives whole) if anyone listens."""
        if self._write_fd is None:
            try:
                self._write_fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nobody listening yet
                    return
                raise
        try:
            os.write(self._write_fd, message)
        except BlockingIOError:
            pass  # pipe full: the listener has plenty to wake it
        except BrokenPipeError:
            os.close(self._write_fd)
            self._write_fd = None

    # -- listening --------------------------------------------------------
    def fileno(self) -> int:
        if self._read_fd is None:
            # O_RDWR keeps the pipe open with no writer, so it never reads EOF.
            self._read_fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        return self._read_fd

    def wait(self, timeout: float) -> bool:
        """Sleep until rung or ``timeout``; consume one ring. True if rung.

        Every idle listener wakes on a ring, but only one gets the byte; the others
        go back to sleep instead of all racing to the queue.
        """
        fd = self.fileno()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            remaining = deadline - time.monotonic()
            if not select.select([fd], [], [], max(0.0, remaining))[0]:  # wait(0) polls once
                return False
            try:
                os.read(fd, 1)
                return True
            except BlockingIOError:  # another listener took it
                if remaining <= 0:
                    return False

    def read_all(self) -> bytes:
        data = b""
        while True:
            try:
                chunk = os.read(self.fileno(), 65536)
            except BlockingIOError:
                return data
            if not chunk:
                return data
            data += chunk

    def close(self) -> None:
        for fd in (self._write_fd, self._read_fd):
            if fd is not None:
                os.close(fd)
        self._write_fd = self._read_fd = None


def work_bell(bells_dir: Path, pool: str) -> Doorbell:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", pool)
    if safe != pool:  # a GPU model's pool: keep distinct names distinct
        safe += "-" + hashlib.sha1(pool.encode()).hexdigest()[:8]
    return Doorbell(bells_dir / f"work-{safe}.fifo")


def events_bell(bells_dir: Path) -> Doorbell:
    return Doorbell(bells_dir / "events.fifo")
