"""``@task_queue``: a notebook function that can also run on the queue.

A plain call runs in the kernel (for debugging); ``.put()`` queues one call,
``.map()`` many (one argument per item, or zipped iterables, as Python's ``map``)
and ``.starmap()`` many with each item unpacked. Task options are fixed by the
decorator, so they never collide with the function's own keyword arguments.

It works on methods as a function does: a plain call binds ``self`` (or ``cls``)
as Python does, and ``.put``/``.map`` ship the bound object with the call. A call
whose arguments cannot bind is refused here, before anything is sent: no retry on
a worker could make it fit.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..options import client_options, with_option_keywords
from .dependencies import mark
from .client import TaskHandle, connect
from .group import TaskGroup

if TYPE_CHECKING:
    from .schedules import Schedule


def wire_conditions(after, after_any_outcome: bool, start_at, delay, uses: list[str]) -> dict:
    """The conditions of one call as the server takes them (jupyter_taskq/conditions.py): ``after`` as ids
    (handles, a TaskGroup, ids; plus ``uses``, the tasks whose results are arguments), ``start_at`` as an
    absolute ISO time (a datetime or ``"HH:MM"`` in this kernel's time zone)."""
    from ..conditions import to_iso

    ids: list[str] = []
    items = [after] if isinstance(after, (str, TaskHandle, TaskGroup)) else list(after or [])
    for item in items:
        if isinstance(item, TaskGroup):
            ids += item.ids
        elif isinstance(item, TaskHandle):
            ids.append(item.id)
        elif isinstance(item, str):
            ids.append(item)
        else:
            raise TypeError(f"after= takes task handles, task ids or a TaskGroup, not {type(item).__name__}")
    ids = list(dict.fromkeys(ids + list(uses)))
    if start_at is not None and delay is not None:
        raise TypeError("give start_at= or delay=, not both")
    conditions: dict = {}
    if ids:
        conditions["after"] = ids
        if after_any_outcome:
            conditions["after_any_outcome"] = True
    if start_at is not None:
        conditions["start_at"] = to_iso(start_at)
    if delay is not None:
        conditions["delay"] = float(delay)
    return conditions


class TaskFunction:
    """``fn`` with ``put``/``map``/``starmap``; ``_bound`` holds what a method binds (``self`` or ``cls``)."""

    def __init__(self, fn: Callable, options: dict):
        self._kind = "function"
        if isinstance(fn, (classmethod, staticmethod)):  # @task_queue above @classmethod / @staticmethod
            self._kind = type(fn).__name__
            fn = fn.__func__
        refuse_generator(fn)
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.options = options
        self._bound: tuple = ()
        self.__self__: object  # set on a bound copy (_bind), as on a bound method

    def __get__(self, instance, owner=None) -> TaskFunction:
        """Bind as Python binds a method: ``self`` for an instance, ``cls`` for a classmethod, nothing for a
        staticmethod or a method read from its class (``Trainer.fit(trainer, 5)`` then works as usual)."""
        if self._bound or self._kind == "staticmethod":
            return self
        if self._kind == "classmethod":
            return self._bind(owner if owner is not None else type(instance))
        return self if instance is None else self._bind(instance)

    def _bind(self, obj) -> TaskFunction:
        bound = object.__new__(type(self))
        bound.__dict__.update(self.__dict__)
        bound._bound = (obj,)
        bound.__self__ = obj
        return bound

    def __call__(self, *args, **kwargs) -> Any:
        return self.fn(*self._bound, *args, **kwargs)

    def put(self, *args, after=None, after_any_outcome: bool = False, start_at=None, delay=None,
            **kwargs) -> TaskHandle:
        """Queue one call; returns its handle (shown as a live widget when it is a cell's value).

        ``after``: handles, ids or a TaskGroup it waits for (PENDING until they are all COMPLETE; if one
        ends otherwise, this one ends CANCELLED, unless ``after_any_outcome=True``). A handle or group
        among the arguments is passed as its result (fetched on the worker) and waited for too.
        ``start_at``: a datetime, an ISO time or ``"HH:MM"`` (next such time); ``delay``: seconds from now.
        These four keywords belong to ``put``/``map``/``starmap``, never to the function."""
        args = (*self._bound, *args)
        check_binds(self.fn, args, kwargs)
        args, marked_kwargs, uses = mark(args, kwargs)
        conditions = wire_conditions(after, after_any_outcome, start_at, delay, uses)
        return connect().submit(self.fn, args, marked_kwargs, conditions=conditions, **self.options)

    def map(self, *iterables: Iterable, after=None, after_any_outcome: bool = False, start_at=None, delay=None,
            **kwargs) -> TaskGroup:
        """One task per item, the item as the one argument, as Python's ``map`` (a tuple stays a tuple);
        ``map(xs, ys)`` zips, calling ``f(x, y)`` up to the shortest. Keyword arguments go to every call.
        All are sent in one request; a call that cannot bind is refused first, and then none is sent.
        ``after``/``start_at``/``delay`` as in :meth:`put`, for every task."""
        if not iterables:
            raise TypeError("map() must have at least one iterable (use put() for a single call)")
        return self._submit(list(zip(*iterables)), kwargs, (after, after_any_outcome, start_at, delay))

    def starmap(self, iterable: Iterable[Iterable], after=None, after_any_outcome: bool = False, start_at=None,
                delay=None, **kwargs) -> TaskGroup:
        """One task per item, the item unpacked into arguments (``f(*item)``), as ``itertools.starmap``
        and ``Pool.starmap``. Keyword arguments go to every call."""
        return self._submit([tuple(args) for args in iterable], kwargs, (after, after_any_outcome, start_at, delay))

    def _submit(self, calls: list[tuple], kwargs: dict,
                when: tuple[Any, bool, Any, Any] = (None, False, None, None)) -> TaskGroup:
        for args in calls:
            check_binds(self.fn, (*self._bound, *args), kwargs)
        _, marked_kwargs, shared_uses = mark((), kwargs)
        kwargs = marked_kwargs or {}
        marked = [mark(args, None) for args in calls]
        calls = [args for args, _kw, _uses in marked]
        conditions = [wire_conditions(*when, shared_uses + uses) for _a, _kw, uses in marked]
        fn = self.fn
        if self._bound or kwargs:  # shared by every task: pickled (and, when big, sent) once
            fn = functools.update_wrapper(functools.partial(self.fn, *self._bound, **kwargs), self.fn)
        any_condition = any(conditions)
        return TaskGroup(connect().submit_many(fn, calls, conditions=conditions if any_condition else None,
                                               **self.options))  # each a tuple: f(*call)

    def schedule(self, cron: str | None = None, *, every=None, args: tuple = (), kwargs: dict | None = None,
                 name: str | None = None, catch_up: str = "once", paused: bool = False) -> Schedule:
        """Run ``f(*args, **kwargs)`` on a cron expression (``"0 2 * * *"``: 02:00 daily, the server's
        local time) or ``every`` interval, as a normal task each time, until the schedule is deleted. The
        function and what it captures are kept with the schedule: it runs with this kernel gone.
        ``catch_up``: a run missed while the server was down runs once at its start ("once") or not ("skip")."""
        from .schedules import create_schedule

        args = (*self._bound, *tuple(args))
        check_binds(self.fn, args, kwargs or {})
        spec = {"cron": cron} if cron is not None else {"every": every}
        if (cron is None) == (every is None):
            raise TypeError("schedule() needs exactly one of cron= and every=")
        return create_schedule(self.fn, args, kwargs, spec, name=name, catch_up=catch_up, paused=paused,
                               options=self.options)

    def every(self, interval, *, args: tuple = (), kwargs: dict | None = None, name: str | None = None,
              catch_up: str = "once", paused: bool = False) -> Schedule:
        """Run ``f(*args, **kwargs)`` every ``interval`` (seconds, or ``"30s"``, ``"15m"``, ``"1h"``, ``"1d"``);
        the first run one interval from now. See :meth:`schedule`."""
        return self.schedule(every=interval, args=args, kwargs=kwargs, name=name, catch_up=catch_up, paused=paused)

    def __repr__(self) -> str:
        bound = f" bound to {self._bound[0]!r}" if self._bound else ""
        return f"<task_queue function {self.fn.__qualname__}{bound} {self.options}>"


def check_binds(fn: Callable, args: tuple, kwargs: dict) -> None:
    """The ``TypeError`` a plain call would raise for arguments that do not fit ``fn``, raised here in the
    kernel (no task is created: on a worker every retry would fail the same way)."""
    try:  # not through __wrapped__: a decorator may take other arguments than the function it wraps
        signature = inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):  # a callable Python cannot introspect: the worker will tell
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{getattr(fn, '__qualname__', fn)}() {exc}") from None


def refuse_generator(fn: Callable) -> None:
    """A generator's values cannot be sent back as they come (a generator cannot be pickled): say so at
    decoration, not after every retry failed on a worker."""
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        kind = "an async generator" if inspect.isasyncgenfunction(fn) else "a generator"
        raise TypeError(f"@task_queue: {getattr(fn, '__qualname__', fn)} is {kind} function, which a task cannot "
                        "return; make it return a list (build it, or `return list(...)`)")


def task_queue(fn: Callable | None = None, **options):
    """Mark a function as runnable on the task queue: ``@task_queue`` or ``@task_queue(gpu=1, ...)``.

    ``gpu`` is 0 (no GPU), 1 (any one GPU) or a GPU model name such as ``"A100"`` (a GPU whose
    model name contains it, on any machine that joined the queue). The keywords are the task
    options of :mod:`jupyter_taskq.options`; a value out of range is refused here, in the kernel.
    On a method, put ``@task_queue`` above ``@classmethod``/``@staticmethod``; an ``async def`` runs
    to completion on the worker (``asyncio.run``)."""
    client_options(options, "task_queue")  # unknown keywords and bad values fail at decoration time
    if fn is not None:
        return TaskFunction(fn, options)
    return lambda f: TaskFunction(f, options)


with_option_keywords(task_queue, [inspect.Parameter("fn", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                                    annotation="Callable | None")])
