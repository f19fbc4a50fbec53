"""Many tasks as one: from ``.map()`` or ``jupyter_taskq.tasks()``."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from ..options import MAX_LIMIT
from .client import Client, TaskHandle, connect, interrupted_message


class TaskGroup:
    def __init__(self, handles: list[TaskHandle]):
        self.handles = list(handles)
        if self.handles:
            prefetch = _Prefetch(self.handles[0].client, [h.id for h in self.handles])
            for handle in self.handles:
                if handle._prefetch is None and handle.client is prefetch.client:
                    handle._prefetch = prefetch

    @property
    def client(self) -> Client:
        """The client its tasks were submitted with (the first handle's); the default one for no tasks."""
        return self.handles[0].client if self.handles else connect()

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self.handles]

    def __len__(self) -> int:
        return len(self.handles)

    def __iter__(self) -> Iterator[TaskHandle]:
        return iter(self.handles)

    def __getitem__(self, index: int) -> TaskHandle:
        return self.handles[index]

    def infos(self) -> list[dict]:
        return connect().tasks_by_id(self.ids) if self.handles else []

    def counts(self) -> dict[str, int]:
        return dict(Counter(info["status"] for info in self.infos()))

    def wait(self, timeout: float | None = None) -> dict[str, int]:
        """Block until every task has finished; returns the count per status."""
        __tracebackhide__ = True  # noqa: F841 - IPython then shows the one line of an interrupt
        try:
            infos = connect().wait(self.ids, timeout) if self.handles else []
        except KeyboardInterrupt:
            raise KeyboardInterrupt(interrupted_message(count=len(self))) from None
        return dict(Counter(info["status"] for info in infos))

    def results(self, timeout: float | None = None, return_exceptions: bool = False) -> list[Any]:
        """Every result, in order, fetched in bulk (``Client.results``: up to 1,000 tasks a request, each
        batch as soon as it has finished), not one request per task. The first failure is re-raised once
        its batch has finished; with ``return_exceptions=True`` a failed task's exception (its own, or
        :class:`TaskFailed`) takes its place in the list, as in ``asyncio.gather``. A ``timeout`` that
        passes still raises ``TimeoutError``."""
        __tracebackhide__ = True  # noqa: F841
        if not self.handles:
            return []
        try:
            return self.handles[0].client.results(self.ids, timeout=timeout, return_exceptions=return_exceptions)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(interrupted_message(count=len(self))) from None

    def cancel(self) -> dict:
        return connect().cancel(self.ids)

    def _repr_mimebundle_(self, include=None, exclude=None):
        from .display import group_bundle

        return group_bundle(self)

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts().items()))
        return f"<TaskGroup of {len(self)} tasks: {counts}>"


class _Prefetch:
    """``[h.result() for h in group]`` in bulk: the first handle asked for fetches the finished results of
    up to ``MAX_LIMIT`` tasks from it on in one request, and the next handles take theirs from here. A
    handle whose task has not finished waits for it alone (its own long poll), and a new bulk look is made
    at most every ``REFETCH`` seconds, so following a running map stays a few requests a second."""

    REFETCH = 0.5

    def __init__(self, client, ids: list[str]):
        self.client = client
        self.ids = ids
        self.position = {task_id: i for i, task_id in reversed(list(enumerate(ids)))}
        self.ready: dict[str, tuple] = {}
        self.last_look = float("-inf")

    def take(self, task_id: str) -> tuple | None:
        """``(ok, value or exception)`` of the task if a bulk look found it finished, else None. Each
        outcome is handed out once (a second ``result()`` asks the server again), so nothing is held
        after it was used."""
        now = time.monotonic()
        if task_id not in self.ready and now - self.last_look >= self.REFETCH:
            self.last_look = now
            start = self.position[task_id]
            batch = [i for i in dict.fromkeys(self.ids[start:start + MAX_LIMIT]) if i not in self.ready]
            self.ready.update(self.client.finished_outcomes(batch))
        return self.ready.pop(task_id, None)


def tasks(status: str | list[str] | None = None, limit: int = 50, name: str | None = None) -> TaskGroup:
    """The queue's newest tasks (optionally only some statuses, only those named ``name``: a function's
    name, or the ``name=`` a task was given) as a group."""
    client = connect()
    if name is None:
        found = client.list(status, limit)["tasks"]
    else:
        found = _named(client, status, limit, name)
    return TaskGroup([TaskHandle(t["id"], client=client, info=t) for t in found])


def _named(client, status, limit: int, name: str) -> list[dict]:
    """The newest ``limit`` tasks named exactly ``name``. The server's ``q`` keeps names (and ids) that
    contain it, in any case, so pages of those are read until enough match exactly."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a task's name (a non-empty string), got {name!r}")
    found: list[dict] = []
    offset = 0
    while len(found) < limit:
        page = client.list(status, limit=MAX_LIMIT, offset=offset, text=name[:_MAX_Q])
        found += [t for t in page["tasks"] if t.get("name") == name]
        offset += len(page["tasks"])
        if not page["tasks"] or offset >= page["total"]:
            break
    return found[:limit]


_MAX_Q = 200  # the longest q the server takes (a longer name still matches by its first 200 characters)
