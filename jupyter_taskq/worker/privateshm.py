"""A private ``/dev/shm`` per attempt, so a task's shared-memory files go with it.

``/dev/shm`` is a tmpfs the whole machine shares: a file a task leaves there (``shm_open``,
``multiprocessing.shared_memory`` without ``unlink``, a plain write) holds memory until someone
deletes it, and nobody knows whose it is. A fresh task process (as root) enters a mount namespace
of its own and mounts a new, empty tmpfs there; what the task and its children write goes into it,
its pages count against the attempt's memory cgroup, and it is gone when the last process of the
attempt is (the keeper kills them all). A warm process gets a new one for each attempt.

Where a mount namespace cannot be made (not root, no ``CAP_SYS_ADMIN``, not Linux), ``/dev/shm``
stays the machine's: :func:`enter` returns False and nothing else changes.
"""

from __future__ import annotations

import ctypes
import os

SHM = "/dev/shm"
_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_SLAVE = 0x2, 0x4, 0x4000, 0x80000
_MNT_DETACH = 0x2
_state = {"private": False}


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def enter() -> bool:
    """In a fresh, single-threaded task process: a mount namespace of its own, with an empty /dev/shm."""
    if os.geteuid() != 0 or not os.path.isdir(SHM):
        return False
    try:
        libc = _libc()
        if libc.unshare(_CLONE_NEWNS) != 0:
            return False
        # Mounts of the machine still reach us; ours never reach the machine.
        if libc.mount(b"none", b"/", None, _MS_REC | _MS_SLAVE, None) != 0:
            return False
        _state["private"] = _mount(libc)
    except (OSError, AttributeError):
        return False
    return _state["private"]


def is_private() -> bool:
    """Whether this process has its own /dev/shm (an image's interpreter, exec'ed, is told so: warmserve.py)."""
    return _state["private"]


def renew() -> None:
    """A warm process's next attempt: a new empty /dev/shm, the last attempt's files dropped with the old."""
    if not _state["private"]:
        return
    libc = _libc()
    libc.umount2(SHM.encode(), _MNT_DETACH)
    _state["private"] = _mount(libc)


def _mount(libc) -> bool:
    return libc.mount(b"tmpfs", SHM.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=1777") == 0
