"""An attempt's cgroups: its whole process tree, wherever it goes, held, limited and killed as one.

A keeper (:mod:`.task_process`) puts each attempt's task process into cgroups of its own before the
attempt starts; whatever the task starts inherits them, also in a new session or daemonised, and no
one but root can leave them. So:

- ``memory=`` limits the whole tree, shared memory and tmpfs pages included (cgroup v2 ``memory.max``
  with ``memory.oom.group``, or v1's ``memory.limit_in_bytes``); the keeper ends the whole attempt at
  the first out-of-memory kill in it and reports the kill and the group's peak.
- ``cpu=`` is a cpuset (v1 ``cpuset`` or v2 ``cpuset.cpus``): a task cannot widen its own affinity.
- Nothing outlives its attempt: the keeper kills every pid in the groups when the attempt ends, and
  any worker of the machine kills the groups of a keeper that died (:func:`sweep`), also when the
  worker and keeper were killed together and the tree was re-parented to init.

Each group is named ``taskq-<keeper pid>.<keeper start time>.<n>`` under the worker's own cgroup of
each hierarchy, so a sweep can tell a dead keeper's groups from a live one's (pid reuse included),
and removes them. Where no cgroup can be created (no cgroupfs, not writable, a v2 cgroup whose
controllers cannot be delegated) this degrades to the keeper's subreaper alone and ``memory=`` to
``RLIMIT_DATA`` (:mod:`.limits`); :func:`probe` says which, once per worker.

Only the standard library.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import time

ROOT = "/sys/fs/cgroup"
PREFIX = "taskq-"
MIB = 1024 * 1024
_NAME = re.compile(rf"^{PREFIX}(\d+)\.(\d+)\.\d+$")


class Machine:
    """Where this process may make cgroups: a directory per hierarchy (None where it may not)."""

    def __init__(self):
        self.tracker: str | None = None  # cgroup v2 (pure or hybrid): holds and kills the tree (cgroup.kill)
        self.memory: tuple[str, str] | None = None  # ("v2" | "v1", our cgroup directory there)
        self.cpuset: tuple[str, str] | None = None

    def describe(self) -> dict:
        return {"memory": f"cgroup {self.memory[0]}" if self.memory else "RLIMIT_DATA (advisory)",
                "cpu": f"cpuset cgroup {self.cpuset[0]}" if self.cpuset else "affinity (advisory)"}

    def dirs(self) -> list[str]:
        """Every directory attempt groups are made in (for :func:`sweep`)."""
        found = [self.tracker] if self.tracker else []
        for kind in (self.memory, self.cpuset):
            if kind and kind[1] not in found:
                found.append(kind[1])
        return found


@functools.lru_cache(maxsize=1)
def probe() -> Machine:
    """What this machine lets this process do, found once (by making and removing a test group)."""
    machine = Machine()
    mounts = _mounts()
    own = _own_paths()
    v2 = next((point for point, fstype, _ in mounts if fstype == "cgroup2"), None)
    if v2 is not None and "" in own:
        mine = os.path.join(v2, own[""].lstrip("/"))
        if _can_make(mine):
            machine.tracker = mine
            controllers = (read_or_none(os.path.join(mine, "cgroup.controllers")) or "").split()
            for name in ("memory", "cpuset"):
                if name in controllers and _delegate(mine, name):
                    setattr(machine, name, ("v2", mine))
    for point, fstype, options in mounts:
        if fstype != "cgroup":
            continue
        for name in ("memory", "cpuset"):
            if getattr(machine, name) is None and name in options and name in own:
                mine = os.path.join(point, own[name].lstrip("/"))
                if _can_make(mine):
                    setattr(machine, name, ("v1", mine))
    return machine


def _mounts() -> list[tuple[str, str, set[str]]]:
    found = []
    for line in (read_or_none("/proc/self/mounts") or "").splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
            found.append((fields[1], fields[2], set(fields[3].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """Controller -> this process's cgroup path (``""``: the v2 hierarchy)."""
    paths = {}
    for line in (read_or_none("/proc/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for name in parts[1].split(",") if parts[1] else [""]:
                paths[name] = parts[2]
    return paths


def _can_make(directory: str) -> bool:
    test = os.path.join(directory, f"{PREFIX}probe-{os.getpid()}")
    try:
        os.mkdir(test)
        os.rmdir(test)
        return True
    except OSError:
        return False


def _delegate(directory: str, controller: str) -> bool:
    """v2: the controller enabled for our cgroup's children (fails in a non-root group with processes)."""
    control = os.path.join(directory, "cgroup.subtree_control")
    if controller in (read_or_none(control) or "").split():
        return True
    return _write(control, f"+{controller}")


def enforcement(memory: int | None, cpu: float | None) -> dict:
    """What the task's JSON shows of its limits: how each is held, and ``enforced`` (False: one of them
    is only advisory here, a task can go past it)."""
    machine = probe()
    held: dict[str, str | bool] = {}
    if memory is not None:
        held["memory"] = f"cgroup {machine.memory[0]}" if machine.memory else "RLIMIT_DATA"
    if cpu is not None:
        held["cpu"] = f"cpuset cgroup {machine.cpuset[0]}" if machine.cpuset else "affinity"
    held["enforced"] = (memory is None or machine.memory is not None) and (cpu is None or machine.cpuset is not None)
    return held


# -- one attempt's groups ---------------------------------------------------------------------------------
_serial = 0


class AttemptGroup:
    """The cgroups of one attempt (made by its keeper, which is ``os.getpid()`` here)."""

    def __init__(self, name: str, memory: int | None):
        self.name = name
        self.memory_limit = memory
        self.dirs: list[str] = []
        self.memory_dir: str | None = None
        self.memory_kind: str | None = None
        self.oom_fd: int | None = None  # readable at an out-of-memory event (v1: an eventfd; v2: memory.events)
        self.enforced = {"memory": memory is None, "cpu": True}

    @classmethod
    def create(cls, pid: int, memory: int | None = None, cores: list[int] | None = None) -> AttemptGroup:
        """Groups for the attempt that process ``pid`` is about to run, ``pid`` moved in; never raises
        (what cannot be made is left out, and ``enforced`` says so)."""
        global _serial
        _serial += 1
        group = cls(f"{PREFIX}{os.getpid()}.{_start_time(os.getpid())}.{_serial}", memory)
        machine = probe()
        if machine.tracker:
            group._make(machine.tracker)
        if memory is not None and machine.memory:
            group._limit_memory(*machine.memory, memory)
        if cores is not None:
            group.enforced["cpu"] = machine.cpuset is not None and group._limit_cpus(*machine.cpuset, cores)
        for directory in group.dirs:
            _write(os.path.join(directory, "cgroup.procs"), str(pid))
        return group

    def _make(self, parent: str) -> str | None:
        path = os.path.join(parent, self.name)
        if path in self.dirs:
            return path
        try:
            os.mkdir(path, 0o700)
        except OSError:
            return None
        self.dirs.append(path)
        return path

    def _limit_memory(self, kind: str, parent: str, mib: int) -> None:
        path = self._make(parent)
        if path is None:
            return
        limit = str(mib * MIB)
        if kind == "v2":
            ok = _write(os.path.join(path, "memory.max"), limit)
            _write(os.path.join(path, "memory.swap.max"), "0")  # past the limit means killed, not swapped
            _write(os.path.join(path, "memory.oom.group"), "1")  # the kernel kills the whole attempt
            if ok:
                try:
                    self.oom_fd = os.open(os.path.join(path, "memory.events"), os.O_RDONLY)
                except OSError:
                    pass
        else:
            ok = _write(os.path.join(path, "memory.limit_in_bytes"), limit)
            _write(os.path.join(path, "memory.memsw.limit_in_bytes"), limit)  # no swap either (where accounted)
            if ok:
                self.oom_fd = _oom_eventfd(path)
        if ok:
            self.memory_dir, self.memory_kind = path, kind
            self.enforced["memory"] = True

    def _limit_cpus(self, kind: str, parent: str, cores: list[int]) -> bool:
        path = self._make(parent)
        if path is None:
            return False
        if kind == "v1":  # a v1 cpuset starts empty: it needs its parent's memory nodes
            mems = read_or_none(os.path.join(parent, "cpuset.mems")) or "0"
            _write(os.path.join(path, "cpuset.mems"), mems.strip())
        return _write(os.path.join(path, "cpuset.cpus"), ",".join(str(c) for c in cores))

    # -- while the attempt runs -------------------------------------------------------------------------------
    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the attempt for memory (so far)."""
        if self.memory_dir is None:
            return False
        if self.memory_kind == "v2":
            text = read_or_none(os.path.join(self.memory_dir, "memory.events")) or ""
            return bool(re.search(r"^oom_kill [1-9]", text, re.MULTILINE))
        text = read_or_none(os.path.join(self.memory_dir, "memory.oom_control")) or ""
        return bool(re.search(r"^oom_kill [1-9]", text, re.MULTILINE)) or _failcnt_at_limit(self.memory_dir)

    def peak_mib(self) -> int | None:
        if self.memory_dir is None:
            return None
        name = "memory.peak" if self.memory_kind == "v2" else "memory.max_usage_in_bytes"
        text = (read_or_none(os.path.join(self.memory_dir, name)) or "").strip()
        return int(text) // MIB if text.isdigit() else None

    def oom_watch(self) -> tuple[list[int], list[int]]:
        """What to add to a ``select``'s read and exceptional lists to wake at an out-of-memory kill
        (v1: the eventfd is readable; v2: ``memory.events`` changed, which poll reports as POLLPRI)."""
        if self.oom_fd is None:
            return [], []
        return ([], [self.oom_fd]) if self.memory_kind == "v2" else ([self.oom_fd], [])

    def memory_report(self) -> dict | None:
        """For the worker: ``{"oom_kill", "peak_mib"}`` of an attempt with a cgroup memory limit."""
        if self.memory_dir is None:
            return None
        return {"oom_kill": self.oom_killed(), "peak_mib": self.peak_mib()}

    def pids(self) -> set[int]:
        found = set()
        for directory in self.dirs:
            for line in (read_or_none(os.path.join(directory, "cgroup.procs")) or "").split():
                if line.isdigit():
                    found.add(int(line))
        return found

    def kill(self, keep: frozenset[int] = frozenset(), timeout: float = 5.0) -> None:
        """SIGKILL every process in the groups but ``keep``, until none is left (a fork racing the
        kill lands in the group too, so it is found on the next pass)."""
        kill_all(self.dirs, keep, timeout)

    def remove(self, keep_pid: int | None = None) -> None:
        """Kill what is left (but ``keep_pid``, moved back to the keeper's own groups) and remove the groups."""
        if keep_pid is not None:
            for directory in self.dirs:
                _write(os.path.join(os.path.dirname(directory), "cgroup.procs"), str(keep_pid))
        self.kill(frozenset({keep_pid}) if keep_pid else frozenset())
        if self.oom_fd is not None:
            os.close(self.oom_fd)
            self.oom_fd = None
        _remove_dirs(self.dirs)
        self.dirs = []


def kill_all(dirs: list[str], keep: frozenset[int] = frozenset(), timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = set()
        for directory in dirs:
            for line in (read_or_none(os.path.join(directory, "cgroup.procs")) or "").split():
                if line.isdigit() and int(line) not in keep:
                    left.add(int(line))
        if not left or time.monotonic() > deadline:
            return
        if not keep:
            for directory in dirs:  # v2: one write kills all, forks included
                _write(os.path.join(directory, "cgroup.kill"), "1")
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)  # killed processes leave the group once they exit (zombies too, when reaped)


def _remove_dirs(dirs: list[str]) -> None:
    for directory in dirs:
        for _ in range(200):  # a killed process leaves the group a moment after the signal
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)


def sweep() -> int:
    """Kill and remove every attempt group on this machine whose keeper is dead (it was killed with
    its worker: nothing was left to end its tree); how many groups were removed."""
    removed = 0
    machine = probe()
    for parent in machine.dirs():
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            match = _NAME.match(name)
            if not match or _start_time(int(match.group(1))) == int(match.group(2)):
                continue
            path = os.path.join(parent, name)
            kill_all([path], timeout=2.0)
            _remove_dirs([path])
            removed += not os.path.exists(path)
    return removed


def _oom_eventfd(path: str) -> int | None:
    """v1: an eventfd the kernel signals at each out-of-memory event of the group."""
    try:
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    except (AttributeError, OSError):
        return None
    try:
        control = os.open(os.path.join(path, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            with open(os.path.join(path, "cgroup.event_control"), "w") as f:
                f.write(f"{efd} {control}")
        finally:
            os.close(control)
        return efd
    except OSError:
        os.close(efd)
        return None


def _failcnt_at_limit(path: str) -> bool:
    """v1 without an ``oom_kill`` counter (before Linux 4.13): the group hit its limit and is under OOM."""
    return "under_oom 1" in (read_or_none(os.path.join(path, "memory.oom_control")) or "")


def _start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (0: no such process)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    fields = stat[stat.rfind(b")") + 2:].split()
    return int(fields[19]) if len(fields) > 19 else 0


def read_or_none(path: str) -> str | None:
    """A small kernel file's text (a cgroup's or /proc's), or None when it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _write(path: str, text: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(text)
        return True
    except OSError:
        return False
