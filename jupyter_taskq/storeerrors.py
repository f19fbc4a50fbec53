"""Telling a failing store (full disk, Redis down) from a failing task, for whoever writes to it.

A write that fails because the state directory is full or Redis is unreachable or refusing
writes is the environment's trouble: a worker waits it out (taking no new work) and the
server answers ``507``; an error about one task's data is that task's alone.
"""

from __future__ import annotations

import errno
import sqlite3


def is_storage_error(exc: BaseException) -> bool:
    """A failure of the store's storage or connection: worth waiting out."""
    return isinstance(exc, (OSError, sqlite3.OperationalError)) or type(exc).__module__.split(".")[0] == "redis"


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's "database or disk is full", or ENOSPC/EDQUOT from a file write (also as a cause)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
