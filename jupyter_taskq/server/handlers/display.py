"""``tasks/<id>/display``: a finished task's result as a MIME bundle (built by :mod:`..display`)."""

from __future__ import annotations

from ..display import display_json
from ..jsonpieces import dumps
from .base import TaskqHandler, authorized


class DisplayHandler(TaskqHandler):
    hub_scope = "url-task"

    @authorized
    async def get(self, task_id):
        self.finish(dumps(await self.blocking(display_json, self.settings["taskq_service"], task_id)))
