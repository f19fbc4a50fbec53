"""Schedules: a function and its arguments run every interval or on a cron expression (issue 24).

Why not Huey's periodic tasks: Huey registers them in code, at import, in the consumer; they cannot be
added, paused, edited or deleted while it runs, keep no record of their runs, and a run due while
the consumer was down is simply lost. So a schedule is a record of its own (kept by the backend: a table
in the SQLite file, a hash in Redis) with the payload its kernel sent (the function and what it captured, pickled
by value: it runs with the kernel gone), and the server's one-second sweep fires the due ones. Each
run is a normal task (``schedule_id`` names its schedule) queued by Huey as any other.

**Exactly one run per due time.** A run's task id is derived from the schedule and its due time
(uuid5): the sweep creates that task unless it exists, then moves ``next_run_at`` on with a
compare-and-set of the whole record. A server killed between the two finds the task made and only
moves on; two servers racing make one task. A run missed while the server was down (more than
:func:`missed_after` late) runs once at start-up with ``catch_up="once"`` (the default), or is
skipped with ``catch_up="skip"``; never once per missed interval.
"""

from __future__ import annotations

import base64
import builtins
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from .. import cron
from ..payload import PayloadError, read_header
from ..statedir import create_private_file, make_private_dir
from .service import ServiceError, bad_request, iso

_NAMESPACE = uuid.UUID("6f1c3a52-8e0b-4f7e-9d51-24a7c0e1b9d3")
CATCH_UP = ("once", "skip")
RECENT_RUNS = 100  # run ids a schedule keeps (its runs() lists these)
MAX_SCHEDULES = 10_000
EDITABLE = ("name", "cron", "every", "catch_up", "paused")


def missed_after(schedule: dict) -> float:
    """Seconds late after which a run counts as missed (the server was down): half its interval, between
    2 s and a minute."""
    interval = schedule.get("every") or 60.0
    return max(2.0, min(60.0, interval / 2))


def not_found(schedule_id: str) -> ServiceError:
    return ServiceError(404, f"no schedule with id {schedule_id!r}", "not found")


class ScheduleService:
    """Create, list, edit, pause, resume, delete and fire schedules. ``owner=None`` in a call means one who
    sees every owner's (a personal server, a hub admin); otherwise another owner's schedule reads as missing."""

    def __init__(self, service, backend):
        self.service = service
        self.records = backend.schedule_records()  # all, get, add, swap, remove (backends/base.py)
        self.folder = make_private_dir(Path(backend.state.files) / "schedules")

    def _payload(self, schedule_id: str) -> Path:
        return self.folder / f"{schedule_id}.payload"

    # -- reading -----------------------------------------------------------------------------------------
    def _load(self, schedule_id: str, owner: str | None) -> tuple[dict, str]:
        if not isinstance(schedule_id, str) or len(schedule_id) > 64:
            raise not_found(str(schedule_id)[:64])
        raw = self.records.get(schedule_id)
        if raw is None:
            raise not_found(schedule_id)
        record = json.loads(raw)
        if owner is not None and record.get("owner") != owner:
            raise not_found(schedule_id)
        return record, raw

    def list(self, owner: str | None = None) -> dict:
        records = [json.loads(raw) for raw in self.records.all().values()]
        records = [r for r in records if owner is None or r.get("owner") == owner]
        records.sort(key=lambda r: r["created_at"])
        return {"schedules": [self.to_json(r) for r in records]}

    def get(self, schedule_id: str, owner: str | None = None) -> dict:
        return self.to_json(self._load(schedule_id, owner)[0])

    def runs(self, schedule_id: str, owner: str | None = None) -> dict:
        record, _ = self._load(schedule_id, owner)
        return {"tasks": self.service.tasks_by_id(record.get("recent_runs") or [])}

    def to_json(self, record: dict) -> dict:
        return {"id": record["id"], "name": record.get("name"), "function": record.get("function"),
                "owner": record.get("owner"), "cron": record.get("cron"), "every": record.get("every"),
                "catch_up": record.get("catch_up"), "paused": bool(record.get("paused")),
                "created_at": iso(record.get("created_at")), "next_run_at": iso(record.get("next_run_at")),
                "last_run_at": iso(record.get("last_run_at")), "runs": record.get("runs", 0),
                "skipped": record.get("skipped", 0), "last_task": (record.get("recent_runs") or [None])[-1],
                "options": {k: v for k, v in (record.get("options") or {}).items()
                            if k not in ("owner", "conditions")}}

    # -- changing ----------------------------------------------------------------------------------------
    def create(self, body: dict, options: dict) -> dict:
        """``body``: ``{payload (base64), cron | every, name?, catch_up?, paused?}``; ``options``: the task
        options, validated by the caller (who sets the owner)."""
        if (options.get("conditions") or {}).get("after") or (options.get("conditions") or {}).get("start_at"):
            raise bad_request("a schedule's runs cannot take 'after', 'start_at' or 'delay'")
        if len(self.records.all()) >= MAX_SCHEDULES:
            raise ServiceError(429, f"this queue holds at most {MAX_SCHEDULES} schedules; delete some", "too many")
        payload = body.get("payload")
        if not isinstance(payload, str):
            raise bad_request("'payload' (the base64 of a jupyter-taskq payload) is required")
        try:
            data = base64.b64decode(payload, validate=True)
        except ValueError:
            raise bad_request("'payload' is not valid base64") from None
        now = time.time()
        record: dict[str, Any] = {
            "id": str(uuid.uuid4()), "owner": options.get("owner"), "created_at": now, "runs": 0, "skipped": 0,
            "recent_runs": [], "paused": False, "catch_up": "once", "cron": None, "every": None, "name": None,
            "options": {k: v for k, v in options.items() if k != "conditions"}}
        self._apply(record, {k: body[k] for k in EDITABLE if k in body}, now, new=True)
        path = self._payload(record["id"])
        fd = create_private_file(path)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            with open(path, "rb") as stream:
                header = read_header(stream)
            if header.get("blob"):
                raise PayloadError("a schedule's payload must carry its function (no shared part)")
        except (PayloadError, ValueError) as exc:
            path.unlink(missing_ok=True)
            raise bad_request(f"not a jupyter-taskq payload: {exc}") from None
        record["function"] = header.get("function") or options.get("name")
        self.records.add(record["id"], json.dumps(record))
        return self.to_json(record)

    def _apply(self, record: dict, changes: dict, now: float, new: bool = False) -> None:
        """Checked edits (each in its range) and the next run they give."""
        unknown = sorted(set(changes) - set(EDITABLE))
        if unknown:
            raise bad_request(f"unknown schedule field(s) {', '.join(map(repr, unknown))}; editable: "
                              f"{', '.join(EDITABLE)}")
        try:
            if "cron" in changes and changes["cron"] is not None:
                cron.parse_cron(changes["cron"])
                record.update(cron=changes["cron"].strip(), every=None)
            if "every" in changes and changes["every"] is not None:
                record.update(every=cron.parse_every(changes["every"]), cron=None, anchor=now)
        except cron.ScheduleError as exc:
            raise bad_request(str(exc)) from None
        if not record.get("cron") and not record.get("every"):
            raise bad_request("a schedule needs 'cron' (e.g. '0 2 * * *') or 'every' (seconds, or e.g. '1h')")
        if "catch_up" in changes:
            if changes["catch_up"] not in CATCH_UP:
                raise bad_request(f"'catch_up' must be one of {', '.join(CATCH_UP)}")
            record["catch_up"] = changes["catch_up"]
        if "name" in changes:
            name = changes["name"]
            if name is not None and (not isinstance(name, str) or len(name) > 200):
                raise bad_request("'name' must be a string of at most 200 characters")
            record["name"] = name
        resumed = False
        if "paused" in changes:
            if not isinstance(changes["paused"], bool):
                raise bad_request("'paused' must be true or false")
            resumed = bool(record.get("paused")) and not changes["paused"]
            record["paused"] = changes["paused"]
        if new or resumed or "cron" in changes or "every" in changes:
            record["next_run_at"] = self._next(record, now)  # a resumed schedule runs at its next time, not all missed

    @staticmethod
    def _next(record: dict, after: float) -> float:
        if record.get("cron"):
            return cron.next_cron(record["cron"], after)
        return cron.next_every(record["every"], record.get("anchor", after) + record["every"], after)

    def update(self, schedule_id: str, changes: Any, owner: str | None = None) -> dict:
        if not isinstance(changes, dict):
            raise bad_request("the body must be a JSON object of the fields to change")
        for _ in range(5):
            record, raw = self._load(schedule_id, owner)
            self._apply(record, changes, time.time())
            if self.records.swap(schedule_id, raw, json.dumps(record)):
                return self.to_json(record)
        raise ServiceError(409, f"schedule {schedule_id} kept changing; try again", "conflict")

    def delete(self, schedule_id: str, owner: str | None = None) -> None:
        self._load(schedule_id, owner)
        self.records.remove(schedule_id)
        self._payload(schedule_id).unlink(missing_ok=True)  # its runs stay: they are tasks of their own

    # -- firing (the server's sweep, off the event loop) ---------------------------------------------------
    def fire_due(self, now: float | None = None) -> builtins.list[str]:
        """Queue a run of every schedule that is due; returns the task ids made."""
        made = []
        for schedule_id, raw in self.records.all().items():
            try:
                record = json.loads(raw)
                now = time.time() if now is None else now
                if record.get("paused") or (record.get("next_run_at") or 0) > now:
                    continue
                task_id = self._fire(record, raw, now)
                if task_id:
                    made.append(task_id)
            except Exception:  # noqa: BLE001 - one bad schedule never stops the others
                import logging

                logging.getLogger("jupyter_taskq.schedules").exception("jupyter-taskq: schedule %s failed to fire",
                                                                        schedule_id)
        return made

    def _fire(self, record: dict, raw: str, now: float) -> str | None:
        due = record["next_run_at"]
        missed = now - due > missed_after(record)
        task_id = None
        if missed and record.get("catch_up") == "skip":
            record["skipped"] = record.get("skipped", 0) + 1
        else:
            task_id = str(uuid.uuid5(_NAMESPACE, f"{record['id']}:{due!r}"))
            if self.service.store.get(task_id) is None:
                self._submit(record, task_id)
            record["runs"] = record.get("runs", 0) + 1
            record["last_run_at"] = now
            record["recent_runs"] = (record.get("recent_runs") or [])[-(RECENT_RUNS - 1):] + [task_id]
        record["next_run_at"] = self._next(record, max(now, due))
        self.records.swap(record["id"], raw, json.dumps(record))  # lost to an edit: the run is made once anyway
        return task_id

    def _submit(self, record: dict, task_id: str) -> None:
        spooled, fd = self.service.open_spool()
        with os.fdopen(fd, "wb") as out, open(self._payload(record["id"]), "rb") as source:
            while chunk := source.read(1024 * 1024):
                out.write(chunk)
        options = dict(record["options"], task_id=task_id, schedule_id=record["id"])
        if record.get("name"):
            options["name"] = record["name"]
        self.service.submit(spooled, options)
