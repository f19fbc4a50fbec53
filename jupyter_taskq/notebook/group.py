"""Many tasks as one: from ``.map()`` or ``jupyter_taskq.tasks()``."""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterator

from .client import TaskHandle, connect


class TaskGroup:
    def __init__(self, handles: list[TaskHandle]):
        self.handles = list(handles)

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
        infos = connect().wait(self.ids, timeout) if self.handles else []
        return dict(Counter(info["status"] for info in infos))

    def results(self, timeout: float | None = None, return_exceptions: bool = False) -> list[Any]:
        """Every result, in order. The first failure is re-raised; with ``return_exceptions=True``
        a failed task's exception (its own, or :class:`TaskFailed`) takes its place in the list,
        as in ``asyncio.gather``. A ``timeout`` that passes still raises ``TimeoutError``."""
        self.wait(timeout)
        if not return_exceptions:
            return [h.result(timeout=timeout) for h in self.handles]
        values = []
        for handle in self.handles:
            try:
                values.append(handle.result(timeout=timeout))
            except Exception as exc:  # noqa: BLE001 - the task's failure, handed back as asked
                values.append(exc)
        return values

    def cancel(self) -> dict:
        return connect().cancel(self.ids)

    def _repr_mimebundle_(self, include=None, exclude=None):
        from .display import group_bundle

        return group_bundle(self)

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts().items()))
        return f"<TaskGroup of {len(self)} tasks: {counts}>"


def tasks(status: str | list[str] | None = None, limit: int = 50) -> TaskGroup:
    """The queue's newest tasks (optionally only some statuses) as a group."""
    client = connect()
    return TaskGroup([TaskHandle(t["id"], client=client, info=t) for t in client.list(status, limit)["tasks"]])
