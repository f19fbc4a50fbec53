"""Schedules from the kernel: ``f.schedule(cron=...)``, ``f.every(...)``, ``jupyter_taskq.schedules()``.

REST only (``taskq/api/schedules``, jupyter_taskq/server/schedules.py). The payload sent is the whole
call, function and captured data by value, so the schedule runs after this kernel is gone; it never
uses a shared part, which a later delete of tasks could remove.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from ..payload import calling_context, dumps_call
from .client import Client, TaskHandle, connect
from .group import TaskGroup


class Schedule:
    """One schedule: ``.id``, ``.info()``, ``.pause()``, ``.resume()``, ``.edit(...)``, ``.delete()``, ``.runs()``."""

    def __init__(self, schedule_id: str, client: Client | None = None, info: dict | None = None):
        self.id = schedule_id
        self.client = client or connect()
        self._info = info

    def info(self) -> dict:
        self._info = self.client._request("GET", f"schedules/{self.id}").json()
        return self._info

    def _patch(self, **changes) -> Schedule:
        self._info = self.client._request("PATCH", f"schedules/{self.id}", json=changes).json()
        return self

    def pause(self) -> Schedule:
        """No run until :meth:`resume` (a run due meanwhile is not made up)."""
        return self._patch(paused=True)

    def resume(self) -> Schedule:
        """Runs again from its next due time after now."""
        return self._patch(paused=False)

    def edit(self, *, cron: str | None = None, every=None, name: str | None = None,
             catch_up: str | None = None) -> Schedule:
        """Change when it runs (a new cron or interval), its name or its catch-up rule, while it runs."""
        changes = {k: v for k, v in {"cron": cron, "every": every, "name": name, "catch_up": catch_up}.items()
                   if v is not None}
        return self._patch(**changes)

    def delete(self) -> None:
        """No more runs; the runs made so far stay as tasks."""
        self.client._request("DELETE", f"schedules/{self.id}")

    def runs(self) -> TaskGroup:
        """Its runs (the last 100), oldest first, each a normal task."""
        tasks = self.client._request("GET", f"schedules/{self.id}/runs").json()["tasks"]
        return TaskGroup([TaskHandle(t["id"], client=self.client, info=t) for t in tasks])

    def __repr__(self) -> str:
        info = self._info or {}
        when = f"cron {info['cron']!r}" if info.get("cron") else f"every {info.get('every')} s"
        state = "paused" if info.get("paused") else f"next {info.get('next_run_at')}"
        return f"<Schedule {self.id} {info.get('name') or info.get('function')}: {when}, {state}>"


def create_schedule(fn: Callable, args: tuple, kwargs: dict | None, spec: dict, *, name: str | None,
                    catch_up: str, paused: bool, options: dict) -> Schedule:
    client = connect()
    context = calling_context()
    rest = client._rest_options(fn, options, "schedule", context)
    data = dumps_call(fn, tuple(args), kwargs, context=context)
    body = {"payload": base64.b64encode(data).decode(), **spec, "catch_up": catch_up, "paused": paused,
            "options": rest, **({"name": name} if name else {})}
    info = client._request("POST", "schedules", json=body).json()
    return Schedule(info["id"], client=client, info=info)


def schedules() -> list[Schedule]:
    """Every schedule you own (an admin: everyone's), oldest first."""
    client = connect()
    found: list[dict[str, Any]] = client._request("GET", "schedules").json()["schedules"]
    return [Schedule(s["id"], client=client, info=s) for s in found]
