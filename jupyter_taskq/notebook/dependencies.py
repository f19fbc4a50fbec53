"""The kernel's half of a dependency's result as an argument (:mod:`jupyter_taskq.depresults` holds the marker
and the worker's half): handles and groups among a call's arguments become :class:`ResultOf` markers, and the
call depends on their tasks."""

from __future__ import annotations

from typing import Any

from ..depresults import ResultOf
from .client import TaskHandle
from .group import TaskGroup


def _marker(value: Any) -> ResultOf | None:
    if isinstance(value, TaskHandle):
        return ResultOf([value.id], many=False)
    if isinstance(value, TaskGroup):
        return ResultOf(value.ids, many=True)
    return None


def mark(args: tuple, kwargs: dict | None) -> tuple[tuple, dict | None, list[str]]:
    """(args, kwargs, the ids they depend on) with handles and groups swapped for markers."""
    ids: list[str] = []

    def swap(value: Any) -> Any:
        found = _marker(value)
        if found is not None:
            ids.extend(found.ids)
            return found
        if type(value) in (list, tuple) and any(_marker(v) is not None for v in value):
            return type(value)(swap(v) for v in value)
        return value

    new_args = tuple(swap(a) for a in args)
    new_kwargs = {k: swap(v) for k, v in kwargs.items()} if kwargs else kwargs
    return new_args, new_kwargs, list(dict.fromkeys(ids))
