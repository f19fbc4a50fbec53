"""The queue as a whole: ``stats``, ``metrics`` (Prometheus), ``warm`` (workers' warm processes), ``changes``."""

from __future__ import annotations

from ..jsonpieces import dumps
from .base import TaskqHandler, authorized

class ChangesHandler(TaskqHandler):
    """``?since=<cursor>&wait=s``: the ids changed after ``cursor`` (``null``: refetch everything) and the
    next cursor; with ``wait`` it answers as soon as something changes. The Lab panel long-polls this."""

    hub_scope = "own"

    @authorized
    async def get(self):
        wait = self.wait_seconds()
        since = self.get_query_argument("since", "")
        answer = await self.changes.changes(since, wait, self.service.fingerprint)
        if answer["changed"]:  # hub service: only this user's tasks (hub/owners.py)
            answer["changed"] = await self.service.visible_ids(answer["changed"])
        self.finish(dumps(answer))


class StatsHandler(TaskqHandler):
    hub_scope = "own"

    @authorized
    async def get(self):
        self.finish(dumps(await self.service.stats()))


class MetricsHandler(TaskqHandler):
    """The queue's Prometheus metrics, in the text format (server/metrics.py; scrape with a token:
    ``Authorization: token ...``, Prometheus's ``authorization: {type: token, credentials: ...}``)."""

    hub_scope = "own"

    @authorized
    async def get(self):
        from ..metrics import CONTENT_TYPE

        self.finish(await self.service.metrics(), set_content_type=CONTENT_TYPE)


class WarmHandler(TaskqHandler):
    """DELETE: every worker ends its warm task processes (they show in ``GET stats``, per worker)."""

    hub_scope = "own"

    @authorized
    async def delete(self):
        self.finish(dumps(await self.service.drop_warm()))
