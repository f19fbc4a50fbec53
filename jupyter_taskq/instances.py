"""A worker instance's name, and whether that very process still runs on this machine.

Each start of a worker is one *instance*, ``name:host:pid:time`` (the wall time it
started, to the microsecond). A task RUNNING on a worker records the instance that
claimed it, so the recovery sweep can tell, without asking anybody, whether the
process that holds the attempt may still run it: a worker that stopped answering is
not necessarily dead (a SIGSTOP, a swap storm, a write blocked on a lock), and
requeueing its attempt while it lives would make two running copies of one task.
On this machine the answer is certain (``/proc``); a worker on another machine cannot
be looked at, and there the store's attempt fence decides (see
:mod:`jupyter_taskq.recovery`).
"""

from __future__ import annotations

import os
import socket
import time

#: Seconds a process may have started after its instance's time and still be taken as that instance
#: (the boot time /proc gives is whole seconds). A pid reused by another process starts after the
#: instance's own process died, which is after the instance's time.
_START_SLACK = 2.0


def new_instance(name: str) -> str:
    return f"{name}:{socket.gethostname()}:{os.getpid()}:{time.time():.6f}"


def parse(instance: str | None) -> tuple[str, int, float] | None:
    """(host, pid, time) of an instance string; None if it is not one (an older or damaged record)."""
    try:
        _name, host, pid, started = (instance or "").rsplit(":", 3)
        return host, int(pid), float(started)
    except ValueError:
        return None


def alive_here(instance: str | None) -> bool:
    """Whether the process of ``instance`` runs (or is stopped) on this machine now.

    False for another machine's instance (nothing can be known here), an unparsable one, a pid that
    is gone or a zombie, and a pid now held by a process that started after the instance did."""
    parsed = parse(instance)
    if parsed is None or parsed[0] != socket.gethostname():
        return False
    _host, pid, started = parsed
    begun = _process_start(pid)
    return begun is not None and begun <= started + _START_SLACK


def _process_start(pid: int) -> float | None:
    """The wall time ``pid`` started at; None if there is no such live (non-zombie) process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) ": state is fields[0], starttime [19]
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return 0.0
