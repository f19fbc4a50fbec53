"""When a task may start: after other tasks (``after=``), at a time (``start_at=``) or after a ``delay=``.

These are conditions of one call, not options of a function: ``f.put(x, after=[h])``, never
``@task_queue(after=...)``. They travel in the submission next to the options (query string, JSON
body or a batch frame) and are checked here, in one place, to a finite range: at most
:data:`MAX_AFTER` dependencies, each a task id, and a start at most :data:`MAX_AHEAD` seconds away.

A task with conditions is stored ``PENDING`` and *held* (no queue message) with ``waiting_for`` (the
dependencies not yet COMPLETE) and ``start_at``; the server's sweep (:mod:`.server.pipelines`)
queues it once both are met, or cancels it when a dependency ends otherwise. This module is
stdlib-only: the kernel imports it too, to turn a datetime or ``"02:00"`` into an absolute time.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from typing import Any

#: The submission keys this module owns (the rest are task options, jupyter_taskq/options.py).
KEYS = ("after", "after_any_outcome", "start_at", "delay")
MAX_AFTER = 10_000  # dependencies of one task
MAX_AHEAD = 366 * 86400.0  # the furthest start a task may ask for, seconds from now
_ID = re.compile(r"^[0-9a-fA-F-]{8,64}$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


class ConditionError(ValueError):
    """A condition out of range; the message names it."""


def split(raw: Mapping[str, Any]) -> tuple[dict, dict]:
    """(options, conditions) of a submission's fields."""
    options = {k: v for k, v in raw.items() if k not in KEYS}
    return options, {k: raw[k] for k in KEYS if k in raw and raw[k] not in (None, "")}


def check(raw: Mapping[str, Any], now: float) -> dict:
    """``{after: [ids], after_any_outcome: bool, start_at: epoch | None}`` from a request's fields
    (``after``: a list, or ids separated by commas in a query string; ``start_at``: ISO 8601, or epoch
    seconds; ``delay``: seconds from now). A start in the past means now."""
    after = raw.get("after") or []
    if isinstance(after, str):
        after = [a.strip() for a in after.split(",") if a.strip()]
    if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
        raise ConditionError("'after' must be a list of task ids")
    after = list(dict.fromkeys(after))
    if len(after) > MAX_AFTER:
        raise ConditionError(f"'after' names {len(after)} tasks; at most {MAX_AFTER} are allowed")
    bad = [a for a in after if not _ID.match(a)]
    if bad:
        raise ConditionError(f"'after': {bad[0][:80]!r} is not a task id")
    any_outcome = raw.get("after_any_outcome", False)
    if isinstance(any_outcome, str):
        if any_outcome.lower() not in ("true", "false", "1", "0"):
            raise ConditionError("'after_any_outcome' must be true or false")
        any_outcome = any_outcome.lower() in ("true", "1")
    if not isinstance(any_outcome, (bool, int)):
        raise ConditionError("'after_any_outcome' must be true or false")
    start_at = None
    if "start_at" in raw and "delay" in raw:
        raise ConditionError("give 'start_at' or 'delay', not both")
    if "delay" in raw:
        start_at = now + _seconds("delay", raw["delay"], 0.0, MAX_AHEAD)
    elif "start_at" in raw:
        start_at = parse_time(raw["start_at"], now)
    if start_at is not None and start_at <= now:
        start_at = None  # due already: nothing to wait for
    return {"after": after, "after_any_outcome": bool(any_outcome), "start_at": start_at}


def _seconds(name: str, value: Any, low: float, high: float) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or not low <= number <= high:
        raise ConditionError(f"'{name}' must be a number of seconds between {low:g} and {high:g}")
    return number


def parse_time(value: Any, now: float) -> float:
    """Epoch seconds of an ISO 8601 time (no offset: this machine's local time) or of epoch seconds,
    within a year of ``now``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ts = float(value)
    elif isinstance(value, str) and len(value) <= 64:
        try:
            ts = float(value)
        except ValueError:
            try:
                ts = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
            except (ValueError, OverflowError, OSError):
                raise ConditionError(f"'start_at' must be an ISO 8601 time, got {value[:64]!r}") from None
    else:
        raise ConditionError("'start_at' must be an ISO 8601 time or epoch seconds")
    if not math.isfinite(ts) or not now - MAX_AHEAD <= ts <= now + MAX_AHEAD:
        raise ConditionError(f"'start_at' must be within {MAX_AHEAD / 86400:g} days of now")
    return ts


def to_iso(value: Any, now: datetime.datetime | None = None) -> str:
    """The kernel's side: a ``datetime`` (naive: this kernel's local time), an ISO string, or a clock time
    ``"HH:MM[:SS]"`` (its next occurrence in local time, today or tomorrow) as an absolute ISO time."""
    now = now or datetime.datetime.now().astimezone()
    if isinstance(value, datetime.datetime):
        return (value if value.tzinfo else value.astimezone()).isoformat()
    if isinstance(value, str):
        clock = _CLOCK.match(value.strip())
        if clock:
            hour, minute, second = int(clock[1]), int(clock[2]), int(clock[3] or 0)
            if hour > 23 or minute > 59 or second > 59:
                raise ValueError(f"start_at={value!r} is not a time of day")
            at = now.replace(hour=hour, minute=minute, second=second, microsecond=0)
            if at <= now:
                at += datetime.timedelta(days=1)
            return at.isoformat()
        try:
            parsed = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"start_at={value!r} is not an ISO 8601 time or a time of day 'HH:MM'") from None
        return (parsed if parsed.tzinfo else parsed.astimezone()).isoformat()
    raise TypeError(f"start_at must be a datetime or a string, got {type(value).__name__}")
