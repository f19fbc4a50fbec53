"""``@task_queue``: a notebook function that can also run on the queue.

A plain call runs in the kernel (for debugging); ``.put()`` queues one call and
``.map()`` many. Task options are fixed by the decorator, so they never collide
with the function's own keyword arguments.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Iterable

from ..options import client_options, with_option_keywords
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


def task_queue(fn: Callable | None = None, **options):
    """Mark a function as runnable on the task queue: ``@task_queue`` or ``@task_queue(gpu=1, ...)``.

    ``gpu`` is 0 (no GPU), 1 (any one GPU) or a GPU model name such as ``"A100"`` (a GPU whose
    model name contains it, on any machine that joined the queue). The keywords are the task
    options of :mod:`jupyter_taskq.options`; a value out of range is refused here, in the kernel."""
    client_options(options, "task_queue")  # unknown keywords and bad values fail at decoration time
    if fn is not None:
        return TaskFunction(fn, options)
    return lambda f: TaskFunction(f, options)


with_option_keywords(task_queue, [inspect.Parameter("fn", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                                    annotation="Callable | None")])
