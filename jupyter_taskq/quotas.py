"""Per-user quotas and usage (issue 15): concurrent GPUs and queued tasks, with overrides.

``max_gpus``: GPUs a user's running tasks may hold at once; a task over it is accepted and waits
(fair share passes its user over until one of their tasks ends). ``max_queued``: tasks a user may
have waiting; a submission over it is refused (429) with a message naming the quota. 0 = no limit.
Overrides are keyed ``"user:<name>"`` or ``"group:<name>"``; a user's own override wins over their
groups', and among groups the most generous value wins.

The policy travels to the workers as a small JSON file in the state directory (``fairshare.json``,
written by the hub service at start): a worker reads it when it changes, and without it a queue
runs in plain priority order as before.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .fairshare import DEFAULT_HALF_LIFE
from .status import WAITING

POLICY_FILE = "fairshare.json"
DAY = 86400.0
WEEK = 7 * DAY


class QuotaExceeded(Exception):
    pass


@dataclass
class Quotas:
    max_gpus: int = 0
    max_queued: int = 0
    overrides: dict[str, dict] = field(default_factory=dict)
    half_life: float = DEFAULT_HALF_LIFE

    def limit(self, name: str, owner: str | None, groups=()) -> int:
        """The quota ``name`` (``max_gpus`` or ``max_queued``) for this user; 0 = none."""
        own = self.overrides.get(f"user:{owner}", {})
        if name in own:
            return int(own[name])
        from_groups = [int(self.overrides[f"group:{g}"][name]) for g in groups
                       if name in self.overrides.get(f"group:{g}", {})]
        if from_groups:
            return 0 if 0 in from_groups else max(from_groups)
        return int(getattr(self, name))

    def has_group_overrides(self, name: str) -> bool:
        """Some group's override sets ``name``: a user's groups matter for it."""
        return any(key.startswith("group:") and name in value for key, value in self.overrides.items())

    def check_queued(self, owner: str, groups, store, adding: int) -> None:
        cap = self.limit("max_queued", owner, groups)
        if not cap:
            return
        queued = store.count(list(WAITING), owner=owner)
        if queued + adding > cap:
            raise QuotaExceeded(
                f"quota max_queued_tasks: {owner} may have at most {cap} tasks waiting and has {queued}; "
                f"{adding} more would make {queued + adding}. Wait for some to start, or cancel some "
                "(an admin raises it with c.TaskQueue.max_queued_per_user or quota_overrides)")

    def to_json(self, groups_of: dict[str, list[str]] | None = None) -> dict:
        return {"max_gpus": self.max_gpus, "max_queued": self.max_queued, "overrides": self.overrides,
                "half_life": self.half_life, "groups_of": groups_of or {}}

    @classmethod
    def from_json(cls, data: dict) -> Quotas:
        return cls(max_gpus=int(data.get("max_gpus") or 0), max_queued=int(data.get("max_queued") or 0),
                   overrides=dict(data.get("overrides") or {}),
                   half_life=float(data.get("half_life") or DEFAULT_HALF_LIFE))


def write_policy(root: Path, quotas: Quotas, groups_of: dict[str, list[str]] | None = None) -> Path:
    path = Path(root) / POLICY_FILE
    partial = path.with_suffix(f".{os.getpid()}.part")
    partial.write_text(json.dumps(quotas.to_json(groups_of)))
    os.replace(partial, path)
    return path


class PolicyFile:
    """The worker's view of ``fairshare.json``: re-read when its mtime changes; None when absent."""

    def __init__(self, root: Path):
        self.path = Path(root) / POLICY_FILE
        self._stamp: float | None = None
        self.policy: tuple[Quotas, dict] | None = None

    def current(self) -> tuple[Quotas, dict] | None:
        try:
            stamp = self.path.stat().st_mtime
        except FileNotFoundError:
            self._stamp, self.policy = None, None
            return None
        if stamp != self._stamp:
            data = json.loads(self.path.read_text())
            self._stamp, self.policy = stamp, (Quotas.from_json(data), data.get("groups_of") or {})
        return self.policy


def empty_usage() -> dict:
    return {"gpu_seconds_today": 0.0, "gpu_seconds_week": 0.0, "tasks": {}}


def usage_by_owner(store, now: float | None = None) -> dict:
    """Per user: GPU-seconds today (since midnight UTC) and this week (since Monday), and tasks by status."""
    now = time.time() if now is None else now
    today = now - now % DAY
    week = today - ((int(today // DAY) + 3) % 7) * DAY  # 1970-01-01 was a Thursday
    users: dict = {}
    for owner, started, ended in store.gpu_spans(week):
        end = now if ended is None else ended
        entry = users.setdefault(owner, empty_usage())
        entry["gpu_seconds_week"] += max(0.0, end - max(started, week))
        entry["gpu_seconds_today"] += max(0.0, end - max(started, today))
    for owner, counts in store.counts_by_owner().items():
        users.setdefault(owner, empty_usage())["tasks"] = counts
    for entry in users.values():
        entry["gpu_seconds_week"] = round(entry["gpu_seconds_week"], 1)
        entry["gpu_seconds_today"] = round(entry["gpu_seconds_today"], 1)
    return {("" if owner is None else owner): entry for owner, entry in users.items()}

