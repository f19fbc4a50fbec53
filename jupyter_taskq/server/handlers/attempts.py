"""``tasks/<id>/attempts``: a task's attempt history (built by :mod:`..attempts`)."""

from __future__ import annotations

from ..attempts import attempts_json
from ..jsonpieces import dumps
from .base import TaskqHandler, authorized


class AttemptsHandler(TaskqHandler):
    hub_scope = "url-task"

    @authorized
    async def get(self, task_id):
        self.finish(dumps(await self.blocking(attempts_json, self.settings["taskq_service"], task_id)))
