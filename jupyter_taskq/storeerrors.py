"""Telling a failing store (full disk, Redis down) from a failing task, for whoever writes to it.

A write that fails because the state directory is full or Redis is unreachable or refusing
writes is the environment's trouble: a worker waits it out (taking no new work) and the
server answers ``507``; an error about one task's data is that task's alone. A small reserve
file in the state directory lets deletes free space on a disk that is already full.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def is_storage_error(exc: BaseException) -> bool:
    """A failure of the store's storage or connection: worth waiting out."""
    return isinstance(exc, (OSError, sqlite3.OperationalError)) or type(exc).__module__.split(".")[0] == "redis"


def is_disk_full(exc: BaseException | None) -> bool:
    """SQLite's "database or disk is full", or ENOSPC/EDQUOT from a file write (also as a cause)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# -- a full state directory -------------------------------------------------------------------
RESERVE_NAME = "reserve"
RESERVE_BYTES = 2 << 20  # held back so that deletes (which need a little room in SQLite's WAL) work on a full disk
MIN_FREE_BYTES = 2 * RESERVE_BYTES  # less free than this and workers start no attempt (it could not finish)


def free_bytes(path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def keep_reserve(root) -> None:
    """Hold ``RESERVE_BYTES`` of the state directory's disk in a file, made again once there is room for
    it twice over. On a full disk a delete gives it up (:func:`with_reserve`) so that space can be freed."""
    path = Path(root) / RESERVE_NAME
    if path.exists() or free_bytes(root) < 2 * RESERVE_BYTES:
        return
    tmp = path.with_name(f"{RESERVE_NAME}.tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def with_reserve(root, write: Callable[[], T]) -> T:
    """Run a write that frees space (deleting a task); if the disk is full, give up the reserve and try again."""
    try:
        return write()
    except Exception as exc:  # noqa: BLE001
        reserve = Path(root) / RESERVE_NAME
        if not is_disk_full(exc) or not reserve.exists():
            raise
        reserve.unlink(missing_ok=True)
        return write()


def check_free_space(*paths) -> None:
    """Raise ENOSPC when one of ``paths`` is on a disk with less than ``MIN_FREE_BYTES`` free."""
    for path in paths:
        if free_bytes(path) < MIN_FREE_BYTES:
            raise OSError(errno.ENOSPC, f"less than {MIN_FREE_BYTES >> 20} MiB free for {path}")
