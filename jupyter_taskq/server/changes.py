"""Hearing about task changes at once, so long-polls answer in milliseconds.

Workers ring the events doorbell with the id of each task whose state they
changed; the server reads it in its event loop and wakes the requests waiting on
those ids. A one-second ceiling on every wait covers a ring that was missed
(a full pipe, a standalone worker on another machine).

Besides waking waiters on given ids, the feed numbers every change it hears, so a
front end can ask "what changed since cursor C?" (``GET changes?since=C&wait=s``)
and hold one cheap long-poll open instead of re-reading the task list.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Collection

from ..backends.doorbell import Doorbell

RECHECK = 1.0
BATCH_SETTLE = 0.02
RECENT = 2000  # changed ids remembered for cursors; an older cursor is told "everything may have changed"


class ChangeFeed:
    def __init__(self, bell: Doorbell):
        self.bell = bell
        self._waiters: dict[str, set[_Waiter]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.epoch = uuid.uuid4().hex[:8]  # a cursor from before a restart is never mistaken for a current one
        self.seq = 0
        self._recent: collections.deque[tuple[int, str | None]] = collections.deque(maxlen=RECENT)
        self._any_waiters: set[asyncio.Future] = set()
        self._fingerprint = None
        self._checked_seq = 0  # self.seq at the last fingerprint check
        self._suspect_seq: int | None = None  # self.seq when the store was seen to move with no ring heard
        self._check: asyncio.Future | None = None  # the one fingerprint query in flight, shared by every poll
        self._checked_at = float("-inf")  # monotonic time the last one ended
        self._loop_thread: int | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._loop.add_reader(self.bell.fileno(), self._on_readable)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.bell.fileno())
            self._loop = None

    def _on_readable(self) -> None:
        for raw in set(self.bell.read_all().split(b"\n")):
            if raw:
                self.notify(raw.decode(errors="replace"))

    def notify(self, task_id: str | None) -> None:
        """``task_id`` changed (None: something changed, we do not know what).

        Safe from any thread: the service runs on a thread pool (see :mod:`.offloop`), and waiters'
        futures may only be resolved on the loop."""
        self._on_loop(self._notify, task_id)

    def notify_many(self, task_ids: Collection[str]) -> None:
        """Each of ``task_ids`` changed (a batch's new tasks): one hop to the loop, not one per task.

        From a thread, 20,000 separate ``call_soon_threadsafe`` calls held the GIL and then queued
        20,000 callbacks on the loop (about 150 ms in which no request was answered). More ids than
        the feed remembers (:data:`RECENT`) are recorded as one "something changed": a cursor from
        before them would be told so anyway."""
        ids = list(task_ids)
        if not ids:
            return
        self._on_loop(self._notify_many, ids)

    def _on_loop(self, fn, arg) -> None:
        """``fn(arg)`` now on the loop's own thread, else handed to the loop (waiters' futures may only be
        resolved there)."""
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(fn, arg)
        else:
            fn(arg)

    def _notify_many(self, task_ids: list[str]) -> None:
        if len(task_ids) > RECENT:
            for task_id in task_ids if self._waiters else ():
                for waiter in self._waiters.pop(task_id, ()):
                    waiter.heard.add(task_id)
                    if not waiter.future.done():
                        waiter.future.set_result(None)
            self._notify(None)
            return
        for task_id in task_ids:
            self._notify(task_id)

    def _notify(self, task_id: str | None) -> None:
        self.seq += 1
        self._recent.append((self.seq, task_id))
        if task_id is not None:
            for waiter in self._waiters.pop(task_id, ()):
                waiter.heard.add(task_id)
                if not waiter.future.done():
                    waiter.future.set_result(None)
        for future in self._any_waiters:
            if not future.done():
                future.set_result(None)
        self._any_waiters.clear()

    # -- cursors ----------------------------------------------------------
    def cursor(self) -> str:
        return f"{self.epoch}.{self.seq}"

    def changed_since(self, cursor: str) -> list[str] | None:
        """Ids changed after ``cursor``: [] for none, None when unknown (foreign, stale or missing cursor)."""
        epoch, _, raw = (cursor or "").partition(".")
        try:
            since = int(raw)
        except ValueError:
            return None
        if epoch != self.epoch or since > self.seq:
            return None
        if since == self.seq:
            return []
        if not self._recent or self._recent[0][0] > since + 1:
            return None  # the changes just after the cursor are no longer remembered
        ids: dict[str, None] = {}
        for seq, task_id in reversed(self._recent):
            if seq <= since:
                break
            if task_id is None:
                return None
            ids[task_id] = None
        return list(ids)

    def check_fingerprint(self, fingerprint) -> None:
        """A change of the store's fingerprint with no ring heard for a whole re-check after it (a missed
        ring) counts as a change of anything. While rings come the feed is live and names what changed:
        answering "everything" whenever the store moved would make every poll during a busy map a full
        refetch.

        A worker writes the store *then* rings, so a query may see a change whose ring is still on its
        way: the store moving with no ring yet is only a suspicion, confirmed at the next check if still
        no ring came (a missed ring shows within about two re-checks). Checks are one at a time, in order
        (:meth:`_shared_check`): a fingerprint read before a change must never be compared with one read
        after it as if it were newer (with 10,000 polls each querying on its own, answers came back out of
        order and 59% of the polls were told to refetch everything after one change)."""
        if self._suspect_seq is not None:
            if self.seq == self._suspect_seq:
                self._suspect_seq = None
                self.notify(None)
            else:
                self._suspect_seq = None  # a ring came: the feed was live
        if self._fingerprint is not None and fingerprint != self._fingerprint and self.seq == self._checked_seq:
            self._suspect_seq = self.seq
        self._fingerprint = fingerprint
        self._checked_seq = self.seq

    async def _shared_check(self, fingerprint: Callable[[], Awaitable[object]], max_age: float) -> None:
        """Compare the store's fingerprint, unless a check ended less than ``max_age`` s ago. One query at a
        time for the whole feed, whatever the number of polls: those that ask while one runs share it."""
        if time.monotonic() - self._checked_at < max_age:
            return
        if self._check is None:
            self._check = asyncio.ensure_future(self._run_check(fingerprint))
        await asyncio.shield(self._check)

    async def _run_check(self, fingerprint: Callable[[], Awaitable[object]]) -> None:
        try:
            self.check_fingerprint(await fingerprint())
        finally:
            self._checked_at = time.monotonic()
            self._check = None

    async def changes(self, cursor: str, timeout: float, fingerprint: Callable[[], Awaitable[object]]) -> dict:
        """``{cursor, changed}`` as soon as anything changed after ``cursor``, or at ``timeout`` with ``changed: []``.

        While waiting, the store's ``fingerprint()`` (a coroutine: it queries the store off the loop) is compared
        once a second, so a change from a worker whose ring was lost still shows within about a second."""
        deadline = time.monotonic() + timeout
        await self._shared_check(fingerprint, RECHECK)
        while True:
            changed = self.changed_since(cursor)
            remaining = deadline - time.monotonic()
            if changed is None or changed or remaining <= 0:
                return {"cursor": self.cursor(), "changed": changed}
            future = asyncio.get_running_loop().create_future()
            self._any_waiters.add(future)
            try:
                await asyncio.wait_for(future, min(RECHECK, remaining))
                await asyncio.sleep(BATCH_SETTLE)  # let a burst of changes land in one answer
            except asyncio.TimeoutError:
                await self._shared_check(fingerprint, RECHECK / 2)
            finally:
                self._any_waiters.discard(future)

    async def wait_until(self, task_ids: Collection[str], done: Callable[[set[str] | None], Awaitable[bool]],
                         timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until ``done(look)``, re-checking whenever one of ``task_ids`` changes
        (``done`` may shrink ``task_ids`` as tasks finish). ``look`` is the set of ids heard to change since
        the last check, or None for "look at them all" (the first check, and each one-second re-check that
        covers a missed ring): a ``wait()`` on a 2,000-task map then reads the few tasks that changed, not
        the whole unfinished rest, at each wake-up.

        The waiter is armed *before* ``done()`` looks at the store: ``done()`` runs off the loop, and a ring
        heard while it runs (the task ended just after its query) would otherwise wake nobody, leaving the
        request to the one-second re-check (results that came about 1 s late)."""
        deadline = time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        look: set[str] | None = None
        while True:
            waiter = _Waiter(loop.create_future())
            watched = list(task_ids)
            for task_id in watched:
                self._waiters.setdefault(task_id, set()).add(waiter)
            try:
                if await done(look):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(waiter.future, min(RECHECK, remaining))
                    if len(watched) > 1:
                        await asyncio.sleep(BATCH_SETTLE)  # let a burst of changes land before looking again
                    look = waiter.heard
                except asyncio.TimeoutError:
                    look = None
            finally:
                for task_id in watched:
                    waiting = self._waiters.get(task_id)
                    if waiting is not None:
                        waiting.discard(waiter)
                        if not waiting:
                            del self._waiters[task_id]


class _Waiter:
    """One look's wait in :meth:`ChangeFeed.wait_until`: woken by the first ring of a watched id; ``heard``
    collects every watched id that rang until the next look."""

    __slots__ = ("future", "heard")

    def __init__(self, future: asyncio.Future):
        self.future = future
        self.heard: set[str] = set()
