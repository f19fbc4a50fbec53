"""``cpu=`` and ``memory=``: an attempt's share of its worker's machine, enforced inside its own process.

The worker writes the attempt's limits next to its output folder (``<attempt dir>.limits.json``)
before handing it the attempt; the task process applies them first thing (:func:`apply_for_attempt`,
called by :mod:`.runner` as it enters the notebook's world) and undoes them for a next attempt
without limits, so a reused process never carries one task's limits into another's.

- ``cpu``: the process is pinned to ``ceil(cpu)`` of the cores its worker may use (chosen by the
  worker so that its neighbours get other cores first), and the thread-count variables numeric
  libraries read at import (``OMP_NUM_THREADS``, ...) are set to that number, so numpy does not
  start one thread per core of the machine.
- ``memory``: where the keeper could put the attempt in a memory cgroup (:mod:`.cgroups`: v2, or
  v1's memory controller) that cgroup holds the limit for the whole tree; otherwise ``RLIMIT_DATA``
  (heap and private mappings of this process only: an allocation past it fails, Python raises
  ``MemoryError``). Either way the worker reports ``exceeded memory=N MiB (peak P MiB)``
  (:func:`memory_failure`).
- ``cpu``: the keeper's cpuset cgroup, where there is one, keeps the task from widening its affinity.

Only the standard library: a task in another interpreter loads this file by path.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_PREFIX = "taskq-"
MIB = 1024 * 1024

_original: dict = {}  # the process's own affinity and data limit, before any attempt changed them


# -- the worker's side ----------------------------------------------------------------------------------------
def spec_path(attempt_dir: str | os.PathLike) -> str:
    return f"{os.fspath(attempt_dir)}.limits.json"


def write_spec(task: dict, attempt_dir: str | os.PathLike, worker_name: str) -> bool:
    """Write the attempt's limits (if it has any) where its process will look; True if written."""
    path = spec_path(attempt_dir)
    if task.get("cpu") is None and task.get("memory") is None:
        try:
            os.unlink(path)  # a retry of a task whose options are unchanged has none: nothing to remove
        except FileNotFoundError:
            pass
        return False
    spec = {"memory": task.get("memory"), "cpu": task.get("cpu")}
    if task.get("cpu") is not None:
        spec["cores"] = choose_cores(task["cpu"], worker_name)
    from ..statedir import make_private_dir  # here, not at the top: the runner may load this file by path

    make_private_dir(os.path.dirname(path))  # the attempt's folders, user-only at every level
    tmp = f"{path}.tmp{os.getpid()}"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(spec, f)
    os.replace(tmp, path)
    return True


def choose_cores(cpu: float, worker_name: str) -> list[int]:
    """``ceil(cpu)`` of this process's cores, starting at a place that depends on the worker's number,
    so two workers with ``cpu=1`` tasks run on different cores."""
    allowed = sorted(os.sched_getaffinity(0))
    n = max(1, min(len(allowed), math.ceil(cpu)))
    match = re.search(r"(\d+)$", worker_name)
    start = (int(match.group(1)) * n if match else 0) % len(allowed)
    return [allowed[(start + i) % len(allowed)] for i in range(n)]


def memory_failure(task: dict, error: dict | None, cgroup: dict | None) -> dict | None:
    """The error to report when an attempt of a task with ``memory=`` ran out of it, else None.

    ``cgroup``: the keeper's ``{"oom_kill", "peak_mib"}`` of the attempt's memory cgroup (None without
    one). Without a cgroup, ``RLIMIT_DATA`` makes an allocation fail: the task raised ``MemoryError``
    or a subclass of it (numpy's ``_ArrayMemoryError``), which the error's ``mro`` lists."""
    limit = task.get("memory")
    if limit is None:
        return None
    if cgroup is not None and cgroup.get("oom_kill"):
        peak = cgroup.get("peak_mib")
    elif error is not None and "MemoryError" in (error.get("mro") or [error.get("type")]):
        peak = error.get("peak_mib")
        if cgroup is not None and cgroup.get("peak_mib") is not None:
            peak = cgroup["peak_mib"]
    else:
        return None
    peak_text = f" (peak {peak} MiB)" if peak is not None else ""
    failure: dict[str, Any] = {"type": "MemoryLimitExceeded", "message": f"exceeded memory={limit} MiB{peak_text}",
                             "traceback": (error or {}).get("traceback"), "mro": ["MemoryLimitExceeded"]}
    # The same call with the same data needs the same memory: a retry would only run out again, so it is
    # not retried unless the task asked for it (retry_for=["MemoryLimitExceeded"]).
    if "MemoryLimitExceeded" not in (task.get("retry_for") or []):
        failure["message"] += " (not retried: add MemoryLimitExceeded to retry_for to retry it)"
        failure["final"] = "memory limit"
    return failure


# -- the task process's side ----------------------------------------------------------------------------------
def apply_for_attempt(attempt_dir: str) -> None:
    """Apply this attempt's limits (or undo the last attempt's): called before the task's code runs."""
    try:
        with open(spec_path(attempt_dir)) as f:
            spec = json.load(f)
    except FileNotFoundError:
        spec = None
    if spec is None and not _original:
        return  # nothing asked now or before: the common case costs one failed open
    _remember_original()
    spec = spec or {}
    _apply_cpu(spec.get("cpu"), spec.get("cores"))
    _apply_memory(spec.get("memory"))


def _remember_original() -> None:
    if not _original:
        import resource

        _original["affinity"] = os.sched_getaffinity(0)
        _original["data"] = resource.getrlimit(resource.RLIMIT_DATA)


def _apply_cpu(cpu: float | None, cores: list[int] | None) -> None:
    if cpu is None:
        os.sched_setaffinity(0, _original["affinity"])
        return
    allowed = set(cores or []) & _original["affinity"] or _original["affinity"]
    os.sched_setaffinity(0, allowed)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(len(allowed))


def _apply_memory(memory: int | None) -> None:
    import resource

    _reset_peak()
    if memory is not None and _in_memory_cgroup():
        resource.setrlimit(resource.RLIMIT_DATA, _original["data"])
        return
    soft, hard = _original["data"]
    if memory is None:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
        return
    wanted = memory * MIB
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (wanted, hard))


def _reset_peak() -> None:
    """Start this attempt's peak resident memory (VmHWM) from now: a reused process has had others."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_mib() -> int | None:
    """This process's peak resident memory since :func:`_reset_peak`, in MiB."""
    status = _read("/proc/self/status") or ""
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else None


def _in_memory_cgroup() -> bool:
    """Whether this process's keeper put it in an attempt memory cgroup (:mod:`.cgroups`), which then
    holds the limit for the whole tree: no ``RLIMIT_DATA`` on top."""
    for line in (_read("/proc/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and f"/{CGROUP_PREFIX}" in parts[2]:
            if "memory" in parts[1].split(","):
                return True
            if parts[1] == "":
                memory_max = _read(os.path.join(CGROUP_ROOT, parts[2].lstrip("/"), "memory.max")) or "max"
                if memory_max.strip() != "max":
                    return True
    return False


def _read(path: str) -> str | None:
    """Its own copy of cgroups.read_or_none: the runner loads this module by path in a notebook's or an
    image's interpreter, where relative imports do not resolve."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None
