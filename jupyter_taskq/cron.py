"""When a schedule runs next: a cron expression (five fields) or a fixed interval.

Cron is read as cron reads it: ``minute hour day-of-month month day-of-week`` in the server's local
time, each field ``*``, ``N``, ``A-B``, ``*/S``, ``A-B/S`` or a comma list of those (day-of-week 0-7,
0 and 7 both Sunday; when both day fields are restricted, either may match, as in cron). Huey's own
``crontab()`` answers only "does this minute match"; a schedule needs "when next" to show it and to
tell a missed run after a restart, so the fields are parsed here (the same grammar).

An interval is seconds (a number) or a duration such as ``"90s"``, ``"15m"``, ``"1h"``, ``"1d"``,
``"1h30m"``; runs are anchored to the first one, so they never drift.
"""

from __future__ import annotations

import datetime
import math
import re

MIN_EVERY = 1.0  # seconds: the server's sweep looks once a second
MAX_EVERY = 366 * 86400.0
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_CRON = 200  # characters


class ScheduleError(ValueError):
    """A cron expression or interval that cannot be a schedule; the message says why."""


def parse_every(value) -> float:
    """Seconds of an interval (a number, or ``"1h30m"``), between 1 s and a year."""
    if isinstance(value, bool):
        raise ScheduleError("'every' must be seconds or a duration such as '1h'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and len(value) <= 64:
        text = value.strip().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts).lower() != text.lower():
                raise ScheduleError(f"'every' must be seconds or a duration such as '30s', '15m', '1h', '1d' "
                                    f"(got {value!r})") from None
            seconds = sum(float(n) * _UNIT[u.lower()] for n, u in parts)
    else:
        raise ScheduleError("'every' must be seconds or a duration such as '1h'")
    if not math.isfinite(seconds) or not MIN_EVERY <= seconds <= MAX_EVERY:
        raise ScheduleError(f"'every' must be between {MIN_EVERY:g} s and {MAX_EVERY / 86400:g} days")
    return seconds


def parse_cron(expr) -> list[set[int]]:
    """The five fields of ``expr`` as sets of allowed values (day of week 7 folded into 0)."""
    if not isinstance(expr, str) or len(expr) > MAX_CRON:
        raise ScheduleError(f"'cron' must be a string of five fields of at most {MAX_CRON} characters")
    fields = expr.split()
    if len(fields) != 5:
        raise ScheduleError(f"'cron' must have five fields (minute hour day month weekday), got {expr!r}")
    sets = [_field(text, name, low, high) for text, (name, low, high) in zip(fields, _FIELDS)]
    if 7 in sets[4]:
        sets[4] = (sets[4] - {7}) | {0}
    return sets


def _field(text: str, name: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, end = low, high
            elif "-" in body:
                start, end = (int(x) for x in body.split("-", 1))
            else:
                start = end = int(body)
                if step_text:
                    end = high
        except ValueError:
            raise ScheduleError(f"cron {name} field {text!r} is not valid") from None
        if step < 1 or not low <= start <= end <= high:
            raise ScheduleError(f"cron {name} field {text!r} must be within {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


def next_cron(expr: str, after: float) -> float:
    """The first minute strictly after ``after`` (epoch seconds) that ``expr`` matches, in local time."""
    minutes, hours, days, months, weekdays = parse_cron(expr)
    day_any, weekday_any = len(days) == 31, len(weekdays) == 7
    at = datetime.datetime.fromtimestamp(after).replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
    limit = at + datetime.timedelta(days=5 * 366)
    while at < limit:
        if at.month not in months:
            at = (at.replace(day=1, hour=0, minute=0) + datetime.timedelta(days=32)).replace(day=1)
            continue
        cron_weekday = (at.weekday() + 1) % 7  # Python: Monday 0; cron: Sunday 0
        if day_any or weekday_any:
            day_ok = at.day in days and cron_weekday in weekdays
        else:
            day_ok = at.day in days or cron_weekday in weekdays
        if not day_ok:
            at = at.replace(hour=0, minute=0) + datetime.timedelta(days=1)
            continue
        if at.hour not in hours:
            at = at.replace(minute=0) + datetime.timedelta(hours=1)
            continue
        if at.minute not in minutes:
            at += datetime.timedelta(minutes=1)
            continue
        return at.timestamp()
    raise ScheduleError(f"cron {expr!r} never matches (e.g. February 30)")


def next_every(every: float, anchor: float, after: float) -> float:
    """The first of ``anchor + k * every`` strictly after ``after``."""
    if after < anchor:
        return anchor
    return anchor + (math.floor((after - anchor) / every) + 1) * every
