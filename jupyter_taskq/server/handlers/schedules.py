"""``schedules``, ``schedules/<id>`` and its ``runs``: periodic tasks (kept by :mod:`..schedules`)."""

from __future__ import annotations

from ..jsonpieces import dumps
from ..schedules import ScheduleService
from .base import TaskqHandler, authorized, bad_request


class _ScheduleHandler(TaskqHandler):
    @property
    def schedules(self) -> ScheduleService:
        return self.settings["taskq_schedules"]

    def scope(self) -> str | None:
        """Whose schedules this request may see: None for everyone's (a personal server, a hub admin)."""
        assert self.me is not None  # set in prepare, before any method runs
        return None if self.me.sees_all else self.me.owner


class SchedulesHandler(_ScheduleHandler):
    """GET: the schedules. POST ``{payload, cron | every, name?, catch_up?, paused?, options: {...}}``."""

    hub_scope = "own"

    @authorized
    async def get(self):
        self.finish(dumps(await self.blocking(self.schedules.list, self.scope())))

    @authorized
    async def post(self):
        body = self.json_body()
        raw_options = body.pop("options", None) or {}
        if not isinstance(raw_options, dict):
            raise bad_request("'options' must be an object of task options")
        options = await self.service.validate_options(raw_options)
        created = await self.blocking(self.schedules.create, body, options)
        self.set_status(201)
        self.finish(dumps(created))


class ScheduleHandler(_ScheduleHandler):
    """GET one; PATCH ``{paused?, cron?, every?, catch_up?, name?}`` (pause, resume, edit); DELETE."""

    hub_scope = "own"

    @authorized
    async def get(self, schedule_id):
        self.finish(dumps(await self.blocking(self.schedules.get, schedule_id, self.scope())))

    @authorized
    async def patch(self, schedule_id):
        body = self.json_body()
        self.finish(dumps(await self.blocking(self.schedules.update, schedule_id, body, self.scope())))

    @authorized
    async def delete(self, schedule_id):
        await self.blocking(self.schedules.delete, schedule_id, self.scope())
        self.set_status(204)
        self.finish()


class ScheduleRunsHandler(_ScheduleHandler):
    """GET: the schedule's recent runs (its last 100 tasks), oldest first."""

    hub_scope = "own"

    @authorized
    async def get(self, schedule_id):
        self.finish(dumps(await self.blocking(self.schedules.runs, schedule_id, self.scope())))
