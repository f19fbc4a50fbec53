"""``GET tasks/<id>/attempts``: the task's attempt history (see :mod:`jupyter_taskq.attempts`)."""

from __future__ import annotations

import json

from jupyter_server.auth.decorator import authorized

from .handlers import TaskqHandler
from .service import iso


def attempts_json(service, task_id: str) -> dict:
    """Oldest first, times in ISO 8601 like the task's own; 404 for a task that does not exist."""
    service.get_task(task_id)
    return {"task_id": task_id, "attempts": [
        {**entry, "started_at": iso(entry.get("started_at")), "ended_at": iso(entry.get("ended_at"))}
        for entry in service.store.attempts(task_id)]}


class AttemptsHandler(TaskqHandler):
    @authorized
    async def get(self, task_id):
        self.finish(json.dumps(await self.blocking(attempts_json, self.settings["taskq_service"], task_id)))


def handlers(api: str) -> list[tuple]:
    return [(f"{api}/tasks/(?P<task_id>[^/]+)/attempts", AttemptsHandler)]
