"""``tasks/cancel``, ``tasks/wait``, ``tasks/results``: many tasks named in one request's body."""

from __future__ import annotations

from ... import batchstream
from ...options import MAX_LIMIT
from ..jsonpieces import dumps, dumps_in_pieces
from .base import CHUNK, MAX_WAIT, TaskqHandler, authorized, bad_request

class CancelHandler(TaskqHandler):
    hub_scope = "own"

    @authorized
    async def post(self):
        body = self.json_body()
        if "task_ids" not in body:
            raise bad_request('body must be {"task_ids": [...]}')
        self.finish(dumps(await self.service.cancel(body["task_ids"])))


class WaitHandler(TaskqHandler):
    """POST ``{"task_ids": [...], "timeout": s}``: answers when all have finished, or at the timeout."""

    hub_scope = "own"

    @authorized
    async def post(self):
        body = self.json_body()
        ids = _task_ids(body)
        timeout = _seconds(body, "timeout", 30)
        done = await self.wait_final(ids, timeout)
        tasks = await self.service.tasks_by_id(ids)
        self.finish(await self.blocking(dumps_in_pieces, {"done": done, "tasks": tasks}))  # 2,000 tasks: off the loop


class ResultsHandler(TaskqHandler):
    """POST ``{"task_ids": [...], "wait": s}``: many tasks' outcomes in one answer, a stream of
    :mod:`jupyter_taskq.batchstream` frames (a JSON head, then the pickled bytes) in the ids' order; see
    ``TaskService.results_many`` for what each head says. With ``wait``, it first waits (at most that long)
    for all of them to finish; those still running come back as ``pending``. At most ``MAX_LIMIT`` ids."""

    hub_scope = "own"

    @authorized
    async def post(self):
        body = self.json_body()
        ids = _task_ids(body)
        if len(ids) > MAX_LIMIT:
            raise bad_request(f"at most {MAX_LIMIT} task ids per request, got {len(ids)}")
        wait = _seconds(body, "wait", 0)
        if wait and ids:
            await self.wait_final(ids, wait)
        view = self.view()
        answer = await self.blocking(lambda: b"".join(batchstream.frames(view.results_many(ids))))
        self.set_header("Content-Type", batchstream.CONTENT_TYPE)
        for start in range(0, len(answer), CHUNK):  # hands the loop back between pieces of a big answer
            self.write(answer[start:start + CHUNK])
            await self.flush()
        await self.finish()


def _task_ids(body: dict) -> list[str]:
    """The body's ``task_ids``: a list of task id strings, or a 400 saying so."""
    ids = body.get("task_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise bad_request('body must be {"task_ids": [...]} (a list of task id strings)')
    return ids


def _seconds(body: dict, key: str, default: float) -> float:
    """The body's ``key``: a number of seconds from 0 to ``MAX_WAIT``, or a 400 saying so."""
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_WAIT:
        raise bad_request(f"'{key}' must be a number of seconds between 0 and {MAX_WAIT:g}")
    return float(value)
