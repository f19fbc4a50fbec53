"""The size of this machine as a task sees it: cores it may run on, memory it may use.

Workers report it with their registration, so the server can refuse a ``cpu=`` or
``memory=`` request that no live worker's machine could ever meet, and say what
there is. A container's limit (cgroup) counts when it is smaller than the host's.
"""

from __future__ import annotations

import os


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask, which a container's cpuset narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def memory_mib() -> int:
    """Physical memory, or the cgroup's memory limit when that is smaller, in MiB."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total // (1024 * 1024)


def machine_size() -> dict:
    return {"cpus": cpu_count(), "memory_mib": memory_mib()}
