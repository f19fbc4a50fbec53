"""``groups`` and ``groups/<id>``: task groups a notebook output names in a few bytes (see :mod:`..groups`)."""

from __future__ import annotations

import time

from ..groups import MAX_GROUP, MAX_SHOWN, SWEEP_EVERY, GroupIndex, group_not_found, summary
from ..jsonpieces import dumps
from .base import TaskqHandler, authorized, bad_request


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

    hub_scope = "own"

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

    hub_scope = "own"

    @authorized
    async def get(self, group_id):
        raw = self.get_query_argument("limit", "50")
        if not raw.isdigit() or int(raw) > MAX_SHOWN:
            raise bad_request(f"'limit' must be an integer between 0 and {MAX_SHOWN}, got {raw!r}")
        ids = await self.blocking(self.groups.ids, group_id)
        if ids is None:
            raise group_not_found(group_id)
        answer = await self.blocking(summary, self.view(), ids, int(raw))  # hub: only the user's own
        if answer["gone"]:
            await self.blocking(self.groups.forget, group_id)
            raise group_not_found(group_id)
        answer["id"] = group_id
        if self.get_query_argument("ids", "0") == "1":
            answer["task_ids"] = ids
        self.finish(dumps(answer))
