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

from jupyter_server.auth.decorator import authorized

from ..statedir import create_private_file, make_private_dir
from ..status import FINAL
from . import owners
from .handlers import TaskqHandler
from .jsonpieces import dumps
from .service import ServiceError, bad_request

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


class _GroupHandler(TaskqHandler):
    @property
    def groups(self) -> GroupIndex:
        index = self.settings.get("taskq_groups")
        if index is None:
            service = self.settings["taskq_service"]
            index = self.settings["taskq_groups"] = GroupIndex(service.state.root / "groups")
        return index


class GroupsHandler(_GroupHandler):
    """POST ``{"task_ids": [...]}``: registers a group, answers ``{"id", "count"}``."""

    @authorized
    async def post(self):
        ids = self.json_body().get("task_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            raise bad_request('"task_ids" must be a non-empty list of task id strings')
        if len(ids) > MAX_GROUP:
            raise bad_request(f"a group holds at most {MAX_GROUP} tasks, got {len(ids)}")
        group_id = await self.blocking(self.groups.create, ids)
        if time.monotonic() - self.settings.get("taskq_groups_swept", -SWEEP_EVERY) >= SWEEP_EVERY:
            self.settings["taskq_groups_swept"] = time.monotonic()
            await self.blocking(self.groups.sweep, self.settings["taskq_service"].store)
        self.set_status(201)
        self.finish(dumps({"id": group_id, "count": len(ids)}))


class GroupHandler(_GroupHandler):
    """GET ``?limit=N`` (default 50): counts, done, the first N tasks; ``&ids=1`` adds every task id."""

    @authorized
    async def get(self, group_id):
        raw = self.get_query_argument("limit", "50")
        if not raw.isdigit() or int(raw) > MAX_SHOWN:
            raise bad_request(f"'limit' must be an integer between 0 and {MAX_SHOWN}, got {raw!r}")
        ids = await self.blocking(self.groups.ids, group_id)
        if ids is None:
            raise group_not_found(group_id)
        answer = await self.blocking(summary, owners.view(self), ids, int(raw))  # hub: only the user's own
        if answer["gone"]:
            await self.blocking(self.groups.forget, group_id)
            raise group_not_found(group_id)
        answer["id"] = group_id
        if self.get_query_argument("ids", "0") == "1":
            answer["task_ids"] = ids
        self.finish(dumps(answer))


def handlers(api: str) -> list[tuple]:
    return [
        (f"{api}/groups", GroupsHandler),
        (f"{api}/groups/(?P<group_id>[^/]+)", GroupHandler),
    ]
