"""``@task_queue``: a notebook function that can also run on the queue.

A plain call runs in the kernel (for debugging); ``.put()`` queues one call and
``.map()`` many. Task options are fixed by the decorator, so they never collide
with the function's own keyword arguments.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

from .client import TaskHandle, connect
from .group import TaskGroup


class TaskFunction:
    def __init__(self, fn: Callable, options: dict):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.options = options

    def __call__(self, *args, **kwargs) -> Any:
        return self.fn(*args, **kwargs)

    def put(self, *args, **kwargs) -> TaskHandle:
        """Queue one call; returns its handle (shown as a live widget when it is a cell's value)."""
        return connect().submit(self.fn, args, kwargs, **self.options)

    def map(self, inputs: Iterable, **kwargs) -> TaskGroup:
        """One task per input (a tuple is unpacked into arguments), sent in one request."""
        if kwargs:
            fn = functools.partial(self.fn, **kwargs)
            functools.update_wrapper(fn, self.fn)
        else:
            fn = self.fn
        return TaskGroup(connect().submit_many(fn, list(inputs), **self.options))

    def __repr__(self) -> str:
        return f"<task_queue function {self.fn.__qualname__} {self.options}>"


def task_queue(fn: Callable | None = None, *, gpu: int | str = 0, max_retries: int | None = None,
               retry_delay: float | None = None, retry_backoff: float | None = None, timeout: float | None = None,
               expires: float | None = None, priority: int = 0, name: str | None = None,
               callback_url: str | None = None, result_ttl: float | None = None):
    """Mark a function as runnable on the task queue: ``@task_queue`` or ``@task_queue(gpu=1, ...)``.

    ``gpu`` is 0 (no GPU), 1 (any one GPU) or a GPU model name such as ``"A100"`` (a GPU whose
    model name contains it, on any machine that joined the queue)."""
    options = dict(gpu=gpu, max_retries=max_retries, retry_delay=retry_delay, retry_backoff=retry_backoff,
                   timeout=timeout, expires=expires, priority=priority, name=name, callback_url=callback_url,
                   result_ttl=result_ttl)
    if fn is not None:
        return TaskFunction(fn, options)
    return lambda f: TaskFunction(f, options)
