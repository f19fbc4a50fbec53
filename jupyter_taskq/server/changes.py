"""Hearing about task changes at once, so long-polls answer in milliseconds.

Workers ring the events doorbell with the id of each task whose state they
changed; the server reads it in its event loop and wakes the requests waiting on
those ids. A one-second ceiling on every wait covers a ring that was missed
(a full pipe, a standalone worker on another machine).
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Collection

from ..doorbell import Doorbell

RECHECK = 1.0
BATCH_SETTLE = 0.02


class ChangeFeed:
    def __init__(self, bell: Doorbell):
        self.bell = bell
        self._waiters: dict[str, set[asyncio.Future]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.bell.fileno(), self._on_readable)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.bell.fileno())
            self._loop = None

    def _on_readable(self) -> None:
        for raw in set(self.bell.read_all().split(b"\n")):
            if raw:
                self.notify(raw.decode(errors="replace"))

    def notify(self, task_id: str) -> None:
        for future in self._waiters.pop(task_id, ()):
            if not future.done():
                future.set_result(None)

    async def wait_until(self, task_ids: Collection[str], done: Callable[[], bool], timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until ``done()``, re-checking whenever one of ``task_ids`` changes
        (``done`` may shrink ``task_ids`` as tasks finish)."""
        deadline = time.monotonic() + timeout
        while True:
            if done():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            future = asyncio.get_running_loop().create_future()
            watched = list(task_ids)
            for task_id in watched:
                self._waiters.setdefault(task_id, set()).add(future)
            try:
                await asyncio.wait_for(future, min(RECHECK, remaining))
                if len(watched) > 1:
                    await asyncio.sleep(BATCH_SETTLE)  # let a burst of changes land before looking again
            except asyncio.TimeoutError:
                pass
            finally:
                for task_id in watched:
                    waiting = self._waiters.get(task_id)
                    if waiting is not None:
                        waiting.discard(future)
                        if not waiting:
                            del self._waiters[task_id]
