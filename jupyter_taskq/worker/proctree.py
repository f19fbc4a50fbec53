"""Linux process-tree tools, so that nothing a task starts outlives it.

A process that a task starts may leave the task's process group (``setsid``,
``start_new_session=True``) or daemonise (fork twice, parent exits), so killing a
process group is not enough. A *child subreaper* (``PR_SET_CHILD_SUBREAPER``) is:
every orphan in the tree below it is re-parented to it instead of to init, so it
can always find, kill and reap whatever is left, by walking its own children
until it has none. The kernel keeps this for us; no cgroup is needed (which a
worker often may not create, e.g. in a container).

Children are found by scanning ``/proc/<pid>/stat`` (``/proc/<pid>/task/<tid>/children``
needs a kernel option that not every kernel has).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import time

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` when our parent dies, so nothing outlives it."""
    _prctl(_PR_SET_PDEATHSIG, sig)


def become_subreaper() -> bool:
    """Orphans below this process are re-parented to it (Linux >= 3.4); False where unsupported."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process we can see."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1:
            parents[int(name)] = int(fields[1])
    return parents


def children(pid: int) -> list[int]:
    return [child for child, parent in _parents().items() if parent == pid]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, parents before their children."""
    by_parent: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        by_parent.setdefault(parent, []).append(child)
    found, frontier = [], [pid]
    while frontier:
        below = [c for p in frontier for c in by_parent.get(p, ())]
        found += below
        frontier = below
    return found


def signal_all(pids, sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_and_reap(pids) -> None:
    """SIGKILL each of this process's children in ``pids`` and wait for each, so none is left a zombie."""
    signal_all(pids, signal.SIGKILL)
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def has_children() -> bool:
    """Whether this process still has a child (reaping any that has exited)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def end_all_children(keep: frozenset[int] = frozenset()) -> None:
    """SIGKILL and reap every child of this (subreaper) process but ``keep``, until there are none.

    Killing a child re-parents its own children to us (before it can be reaped), so this
    repeats until no other child is left.
    """
    me = os.getpid()
    empty_scans = 0
    while True:
        if not keep and not has_children():
            return
        targets = [pid for pid in children(me) if pid not in keep]
        if not targets:
            empty_scans += 1
            if keep or empty_scans > 200:  # only kept ones left (or /proc hides them from us)
                return
            time.sleep(0.005)  # a child is between exiting and being reaped
            continue
        kill_and_reap(targets)


def wait_exit(pidfd: int, timeout: float | None) -> bool:
    """Wait up to ``timeout`` seconds for the process behind ``pidfd`` to exit."""
    return bool(select.select([pidfd], [], [], timeout)[0])
