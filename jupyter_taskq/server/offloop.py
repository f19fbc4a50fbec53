"""Blocking work (store queries, object-store transfers, file copies) off the Jupyter server's event loop.

The extension shares its event loop with everything JupyterLab does: one slow SQLite
query, or a 1 GB upload to S3, run on the loop would stall every request of the server.
So the handlers reach the service only through :class:`OffLoop`, which runs each call on
a thread pool of its own (not the loop's default one, which Jupyter uses too) and
returns an awaitable. The service and stores are thread-safe (SQLite behind a lock,
redis-py's connection pool, fsspec's own I/O thread).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tornado.ioloop import IOLoop

THREADS = 16  # concurrent blocking calls; long transfers each hold one, quick queries share the rest
#: How long a busy pool thread may keep the GIL once the event loop asks for it (CPython's default: 5 ms).
LOOP_SWITCH_INTERVAL = 0.001


class OffLoop:
    """``await OffLoop(service).method(...)`` runs ``service.method(...)`` on the pool."""

    def __init__(self, target: Any, executor: ThreadPoolExecutor):
        self._target = target
        self._executor = executor

    def __getattr__(self, name: str):
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        async def call(*args, **kwargs):
            return await run(self._executor, attr, *args, **kwargs)

        call.__name__ = name
        return call


async def run(executor: ThreadPoolExecutor, fn: Callable, *args, **kwargs):
    """Await ``fn(*args, **kwargs)`` on the pool; once the server is stopping (the pool shut down), a
    request answers 503, which the kernel client rides out, instead of a 500."""
    try:
        future = IOLoop.current().run_in_executor(executor, functools.partial(fn, *args, **kwargs))
    except RuntimeError as exc:  # "cannot schedule new futures after shutdown"
        raise _shutting_down() from exc
    try:
        return await future
    except asyncio.CancelledError:
        if future.cancelled() and getattr(executor, "_shutdown", False):  # a queued call the stop dropped
            raise _shutting_down() from None
        raise


def _shutting_down():
    from .service import ServiceError

    return ServiceError(503, "the task queue server is shutting down; try again shortly", "shutting down")


def favour_the_loop() -> None:
    """Let the event loop thread take the GIL back sooner while the pool is busy.

    Off the loop is not enough on its own: a pool thread parsing a 20,000-task batch holds the GIL,
    and the loop, which needs it for every step of every request (and again for each hop to and
    from the pool), waits up to the interpreter's switch interval each time it asks. At CPython's
    5 ms a ``GET stats`` made of a dozen such steps took 60-130 ms (p99) during a big batch; at
    1 ms, 20-45 ms. Busy threads switch a little more often; the server's own work is I/O bound.
    Never raised: whoever set it lower knew why."""
    if sys.getswitchinterval() > LOOP_SWITCH_INTERVAL:
        sys.setswitchinterval(LOOP_SWITCH_INTERVAL)


def freeze_startup_objects() -> None:
    """Leave the server's start-up objects out of every later full garbage collection.

    CPython's full collection walks every tracked object and holds the GIL throughout: in a
    Jupyter server with JupyterLab about 200,000 objects from start-up alone (parser tables,
    modules, handlers), growing with a big batch to 320,000, a pause of 90-130 ms in which no
    request is answered. Frozen (:func:`gc.freeze`, meant for this) the long-lived start-up
    objects are never walked again; a pause then grows only with what the server holds now.
    Called once the loop runs, after every extension has loaded; what is garbage is collected
    first, so nothing dead is kept."""
    gc.collect()
    gc.freeze()


def make_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="taskq-io")
