"""A dependency's result as an argument: ``evaluate.put(fits)`` with a ``TaskGroup`` or ``TaskHandle``.

In the kernel, :func:`jupyter_taskq.notebook.dependencies.mark` swaps each handle (and each group)
among the call's top-level arguments, keyword values, and the items of a top-level list or tuple, for
a small :class:`ResultOf` marker naming its task ids, and returns those ids: the call then depends on
them (``after=``), so it runs only once they are COMPLETE. On the worker, :func:`resolve` swaps each
marker for the result, fetched there with the attempt's task token (jupyter_taskq/tasktokens.py): a
result never passes through the kernel, and a group becomes the list of its results, in order.

Stdlib-only and importable on both sides: the marker is pickled by reference to this module.
"""

from __future__ import annotations

from typing import Any


class ResultOf:
    """Stands for the result of task ``ids[0]`` (``many=False``) or the list of results of ``ids``."""

    __slots__ = ("ids", "many")

    def __init__(self, ids: list[str], many: bool):
        self.ids = list(ids)
        self.many = many

    def __reduce__(self):
        return ResultOf, (self.ids, self.many)

    def __repr__(self) -> str:
        return f"<result of {'tasks ' + ', '.join(self.ids) if self.many else 'task ' + self.ids[0]}>"


def _has_marker(value: Any) -> bool:
    return isinstance(value, ResultOf) or (type(value) in (list, tuple) and any(isinstance(v, ResultOf) for v in value))


def resolve(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """On the worker: every marker replaced by its result (a dependency that did not complete raises)."""
    if not any(_has_marker(a) for a in args) and not any(_has_marker(v) for v in (kwargs or {}).values()):
        return args, kwargs
    from .notebook.client import connect

    client = connect()

    def value(marker: ResultOf) -> Any:
        results = [client.result(task_id, timeout=60) for task_id in marker.ids]
        return results if marker.many else results[0]

    def swap(item: Any) -> Any:
        if isinstance(item, ResultOf):
            return value(item)
        if type(item) in (list, tuple) and any(isinstance(v, ResultOf) for v in item):
            return type(item)(swap(v) for v in item)
        return item

    return tuple(swap(a) for a in args), {k: swap(v) for k, v in (kwargs or {}).items()}
