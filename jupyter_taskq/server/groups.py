"""Task groups a notebook output can name in a few bytes.

A displayed ``TaskGroup`` of 2,000 tasks must not put 2,000 ids (78 KB) into the saved
notebook, yet the Lab output has to find its tasks again after a reload, a kernel restart,
or days later. So the kernel registers the ids once (``POST groups``) and the output keeps
only the group's id: the sha256 of the ids, so registering the same group twice is one
file. ``GET groups/<id>`` answers what the output shows: the count per status, whether
all have finished, and the first ``limit`` tasks in full (never the whole group's JSON on
every refresh). A group whose tasks have all been deleted answers 404, as a task does.

Groups are files of ids under the server's state directory (a few dozen bytes per task),
read only by this server. A group goes when a ``GET`` finds all its tasks deleted, and at most
hourly a registration sweeps day-old groups whose tasks are all gone (purged by their TTL).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter
from pathlib import Path

from ..statedir import create_private_file, make_private_dir
from ..status import FINAL
from .service import ServiceError

GROUP_ID = re.compile(r"[0-9a-f]{32}")
MAX_GROUP = 100_000  # tasks in one group, as in one batch
MAX_SHOWN = 1000
GONE = "MISSING"  # the status counted for a task that no longer exists
SWEEP_EVERY = 3600.0
SWEEP_AGE = 86400.0


class GroupIndex:
    """Group id -> task ids, one small JSON file per group."""

    def __init__(self, root: Path):
        self.root = make_private_dir(Path(root))

    def create(self, task_ids: list[str]) -> str:
        group_id = hashlib.sha256("\n".join(task_ids).encode()).hexdigest()[:32]
        path = self.root / f"{group_id}.json"
        if not path.exists():
            partial = path.with_name(f".{group_id}.{os.getpid()}.part")
            with os.fdopen(create_private_file(partial), "w") as f:
                json.dump(task_ids, f)
            os.replace(partial, path)
        return group_id

    def ids(self, group_id: str) -> list[str] | None:
        if not GROUP_ID.fullmatch(group_id):
            return None
        try:
            return json.loads((self.root / f"{group_id}.json").read_text())
        except FileNotFoundError:
            return None

    def forget(self, group_id: str) -> None:
        (self.root / f"{group_id}.json").unlink(missing_ok=True)

    def sweep(self, store, older_than: float = SWEEP_AGE) -> int:
        """Remove groups older than ``older_than`` seconds whose tasks no longer exist; returns how many."""
        removed, cutoff = 0, time.time() - older_than
        for path in self.root.glob("*.json"):
            try:
                if path.stat().st_mtime > cutoff or store.statuses(json.loads(path.read_text())):
                    continue
            except (OSError, ValueError):
                continue
            path.unlink(missing_ok=True)
            removed += 1
        return removed


def summary(service, task_ids: list[str], limit: int) -> dict:
    """Counts per status over the whole group (one cheap status query) and the first ``limit`` tasks."""
    statuses = service.store.statuses(task_ids)
    counts = Counter(statuses.get(i, GONE) for i in task_ids)
    return {
        "count": len(task_ids),
        "counts": dict(counts),
        "done": all(s in FINAL or s == GONE for s in counts),
        "gone": counts.get(GONE, 0) == len(task_ids),
        "tasks": service.tasks_by_id(task_ids[:limit]) if limit else [],
    }


def group_not_found(group_id: str) -> ServiceError:
    return ServiceError(404, f"no task group with id {group_id!r} (its tasks were deleted)", "not found")
