"""``tasks/<id>``, its ``retry`` and its ``logs``: one task named in the URL."""

from __future__ import annotations

from ...status import FINAL
from ..jsonpieces import dumps
from .base import TaskqHandler, authorized, bad_request

class TaskHandler(TaskqHandler):
    hub_scope = "url-task"

    @authorized
    async def get(self, task_id):
        wait = self.wait_seconds()
        task = await self.service.get(task_id)
        if wait and task["status"] not in FINAL:
            await self.wait_final([task_id], wait)
            task = await self.service.get(task_id)
        self.finish(dumps(task))

    @authorized
    async def delete(self, task_id):
        await self.service.delete(task_id)
        self.set_status(204)
        self.finish()


class RetryHandler(TaskqHandler):
    hub_scope = "url-task"

    @authorized
    async def post(self, task_id):
        task = await self.service.retry(task_id)
        self.set_status(201)
        self.finish(dumps(task))


class LogsHandler(TaskqHandler):
    """``?offset=N``: the log from byte N, also while the task runs; pass back ``next_offset`` to follow.
    ``&attempt=K``: attempt K's own log (default: the latest attempt's)."""

    hub_scope = "url-task"

    @authorized
    async def get(self, task_id):
        raw = self.get_query_argument("offset", "0")
        try:
            offset = int(raw)
        except ValueError:
            raise bad_request(f"'offset' must be an integer, got {raw!r}") from None
        attempt = self.get_query_argument("attempt", None)
        self.finish(dumps(await self.service.log_chunk(task_id, offset, attempt=attempt)))
