"""The REST client a kernel uses: submit calls, follow tasks, fetch results.

It speaks only HTTP to the server extension (``requests``), so a kernel never
imports server or worker code. Results and remote exceptions come back pickled;
a remote exception is re-raised with the remote traceback chained to it, the way
``concurrent.futures`` shows a process pool's errors.
"""

from __future__ import annotations

import builtins  # Client.list shadows list in the class body's annotations
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import requests

from .. import batchstream, blobs, seeds
from ..options import MAX_LIMIT, client_options, with_option_keywords
from .. import pickling
from ..payload import calling_context, dumps_call, dumps_call_parts, with_on_start
from ..status import FINAL, TaskStatus
from .errors import TaskqError
from .origin import submitted_from

LONG_POLL = 30.0
QUERY_AFTER = 50  # dependencies sent in a query string; more go in a batch frame's JSON


class TaskFailed(RuntimeError):
    """A task ended without a result (FAILED, TIMEOUT, CANCELLED or EXPIRED)."""

    def __init__(self, task: dict):
        error = task.get("error") or {}
        detail = f": {error.get('type')}: {error.get('message')}" if error else ""
        super().__init__(f"task {task.get('name') or task['id']} ended {task['status']}{detail}")
        self.task = task
        self.status = task["status"]
        self.error = error


class RemoteTraceback(Exception):
    """Carries the traceback text from the worker, shown under the re-raised exception."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


RECONNECT_FOR_ENV = "JUPYTER_TASKQ_RECONNECT_FOR"
DEFAULT_RECONNECT_FOR = 60.0
_GATEWAY_DOWN = (502, 503, 504)  # a proxy in front of a restarting server
#: The reason of the server's 503 when its queue failed to start (server/notstarted.py): no outage to wait
#: out, so the call raises at once with the server's message (a bad option, a database it will not open).
_NOT_STARTED = "jupyter-taskq not started"


def _not_started(response: requests.Response) -> bool:
    if response.status_code != 503 or not response.headers.get("Content-Type", "").startswith("application/json"):
        return False
    try:
        return response.json().get("reason") == _NOT_STARTED
    except ValueError:
        return False


def _never_sent(exc: requests.ConnectionError) -> bool:
    """Refused, unresolvable or timed out while connecting: the request never reached the server."""
    import urllib3

    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(exc, requests.ConnectTimeout) or isinstance(reason, urllib3.exceptions.ConnectTimeoutError)


def _reconnect_for(value: float | None) -> float:
    if value is None:
        raw = os.environ.get(RECONNECT_FOR_ENV)
        if not raw:
            return DEFAULT_RECONNECT_FOR
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"${RECONNECT_FOR_ENV} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"reconnect_for must be 0 or more seconds, got {value}")
    return float(value)


class Client:
    """``reconnect_for``: seconds to ride out an unreachable server (a restart) before a call fails; default
    ``$JUPYTER_TASKQ_RECONNECT_FOR`` or 60, 0 to fail at once. Reads and waits are retried on any connection
    error; a submission, cancel, retry or delete only when it provably never reached the server
    (connection refused), so a task is never queued twice."""

    def __init__(self, url: str, token: str | None = None, session: requests.Session | None = None,
                 reconnect_for: float | None = None):
        self.url = url.rstrip("/") + "/"
        self.api = self.url + "taskq/api/"
        self.session = session or requests.Session()
        if self.url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
            self.session.trust_env = False  # no proxy look-up per request for a local server
        if token:
            self.session.headers["Authorization"] = f"token {token}"
        self.reconnect_for = _reconnect_for(reconnect_for)
        self._outage_lock = threading.Lock()
        self._outage_said = False

    # -- HTTP -------------------------------------------------------------
    def _request(self, method: str, path: str, expect=(200, 201, 204), **kwargs) -> requests.Response:
        response = self._send(method, path, **kwargs)
        if response.status_code not in expect:
            try:
                message = response.json().get("message") or response.reason
            except ValueError:
                message = response.text[:500] or response.reason
            raise TaskqError(response.status_code, message)
        return response

    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        """One request, sent again while the server is unreachable (see the class docstring)."""
        repeatable = method == "GET" or (method == "POST" and path == "tasks/wait")
        deadline, delay = None, 0.1
        while True:
            try:
                response = self.session.request(method, self.api + path, **kwargs)
            except requests.ConnectionError as exc:
                if not (repeatable or _never_sent(exc)):
                    raise
                failure: BaseException | requests.Response = exc
            else:
                if not (repeatable and response.status_code in _GATEWAY_DOWN) or _not_started(response):
                    self._outage_said = False
                    return response
                failure = response  # a proxy in front of a restarting server
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.reconnect_for
                self._say_unreachable()
            if now >= deadline:
                if isinstance(failure, requests.Response):
                    return failure
                failure.add_note(f"jupyter-taskq: the server at {self.url} stayed unreachable for "
                                 f"{self.reconnect_for:g} s (connect(reconnect_for=...) or "
                                 f"${RECONNECT_FOR_ENV} sets how long)")
                raise failure
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 1.0)

    def _say_unreachable(self) -> None:
        """One line per outage, however many calls (threads) are waiting it out."""
        with self._outage_lock:
            if self._outage_said or self.reconnect_for <= 0:
                return
            self._outage_said = True
        print(f"jupyter-taskq: server unreachable, retrying for up to {self.reconnect_for:g} s", file=sys.stderr)

    # -- submitting -------------------------------------------------------
    def submit(self, fn: Callable, args: Iterable = (), kwargs: dict | None = None, *, conditions: dict | None = None,
               **options) -> TaskHandle:
        """Queue ``fn(*args, **kwargs)``; task options never mix with the function's own arguments.
        ``conditions``: when it may start (``after``, ``after_any_outcome``, ``start_at``, ``delay``:
        jupyter_taskq/conditions.py), as :func:`wire_conditions` makes them.

        A function that captures a lot of data (``blobs.SHARE_AT``) is sent once as a shared part
        and only named by the payload, so ``put()`` in a loop stores that data once."""
        if conditions and len(conditions.get("after") or ()) > QUERY_AFTER:  # too long for a URL: a batch of one
            return self.submit_many(fn, [tuple(args)], kwargs=kwargs, conditions=[conditions], **options)[0]
        context = calling_context()
        params = self._rest_options(fn, options, "submit", context)
        if conditions:
            params.update({k: ",".join(v) if k == "after" else v for k, v in conditions.items()})
        shared = blobs.shared_part(fn, context)  # the function pickled alone: a big one is pickled only once
        own = {**context, "seed": seeds.draw()}  # this task's own: never in the shared part (seeds.py's rule)
        data: bytes | _Stream
        if shared is None:  # sent as its two parts: joined, a 100 MB argument would be copied once more
            data = _Stream(list, list(dumps_call_parts(fn, tuple(args), kwargs, context=own)))
        else:
            data = blobs.dumps_args(shared, tuple(args), kwargs, own)
        task = self._with_shared(shared, lambda: self._request(
            "POST", "tasks", params=params, data=data, headers={"Content-Type": "application/octet-stream"}))
        return TaskHandle(task["id"], client=self, info=task)

    def submit_many(self, fn: Callable, arg_list: Iterable, *, kwargs: dict | None = None,
                    conditions: list[dict] | None = None, **options) -> list[TaskHandle]:
        """One task per item of ``arg_list`` (a tuple is unpacked), sent in one streamed request;
        ``conditions``: each task's own (see :meth:`submit`), in order.

        The function, with whatever it captures, is serialised once: when that is big it is sent
        once as a shared part (only if the server lacks it) and each task carries its arguments."""
        context = calling_context()
        opts = self._rest_options(fn, options, "submit_many", context)
        arg_list = [item if isinstance(item, tuple) else (item,) for item in arg_list]
        if not arg_list:
            return []
        shared = blobs.shared_part(fn, context)
        if shared is None:  # each task its own seed, drawn in order (seeds.py): no two share a stream
            payloads = [dumps_call(fn, args, kwargs, context={**context, "seed": seeds.draw()}) for args in arg_list]
        else:
            payloads = [blobs.dumps_args(shared, args, kwargs, {**context, "seed": seeds.draw()}) for args in arg_list]
        per_task = conditions or [{}] * len(payloads)
        body = _Stream(batchstream.frames, [({**opts, **own}, payload) for own, payload in zip(per_task, payloads)])
        tasks = self._with_shared(shared, lambda: self._request(
            "POST", "tasks/batch", data=body, headers={"Content-Type": batchstream.CONTENT_TYPE}))["tasks"]
        return [TaskHandle(t["id"], client=self, info=t) for t in tasks]

    def _with_shared(self, shared: blobs.Shared | None, send: Callable[[], requests.Response]) -> dict:
        """Send a submission after making sure the server has its shared part; once more if the server
        removed that part in between (its last task deleted: a 409 that names the upload to make)."""
        if shared is None:
            return send().json()
        self._share(shared)
        try:
            return send().json()
        except TaskqError as exc:
            if exc.status_code != 409 or f"blobs/{shared.key}" not in exc.server_message:
                raise
        self._share(shared)
        return send().json()

    def _share(self, shared: blobs.Shared) -> None:
        """Upload the shared part unless the server has it (HEAD first: 40 put() calls send it once)."""
        head = self._request("HEAD", f"blobs/{shared.key}", expect=(200, 404))
        if head.status_code == 200:
            return
        limit = int(head.headers.get("X-Taskq-Max-Payload-Size") or 0)
        if limit and len(shared.data) > limit:
            raise TaskqError(413, f"the function {shared.function!r} with the data it captures is "
                                  f"{len(shared.data):,} bytes, over the server's limit of {limit:,} bytes; the "
                                  "server's TaskQueue.max_payload_size raises it (c.TaskQueue.max_payload_size = "
                                  "... in jupyter_server_config.py)")
        self._request("PUT", f"blobs/{shared.key}", data=shared.data,
                      headers={"Content-Type": "application/octet-stream"})

    @staticmethod
    def _rest_options(fn: Callable, options: dict, caller: str, context: dict) -> dict:
        """The REST options of a call (declared once in :mod:`jupyter_taskq.options`), checked here first;
        the options that travel in the payload (``on_start``) go into ``context``, the payload's header."""
        options = {**submitted_from(), **options, "name": options.get("name") or getattr(fn, "__name__", None)}
        rest, in_payload = client_options(options, caller)
        context.update(with_on_start({}, in_payload.get("on_start")))
        return rest

    # -- reading and acting -----------------------------------------------
    def get(self, task_id: str, wait: float = 0) -> dict:
        return self._request("GET", f"tasks/{task_id}", params={"wait": wait} if wait else None).json()

    def list(self, status: str | Iterable[str] | None = None, limit: int = 50, offset: int = 0,
             text: str | None = None, owner: str | None = None) -> dict:
        """A page of tasks, newest first; ``text``: only those whose name or id contains it (any case);
        ``owner``: only that user's (on a hub, an admin's choice; a user sees only their own anyway)."""
        if status is not None and not isinstance(status, str):
            status = ",".join(status)
        params = {"limit": limit, "offset": offset, **({"status": status} if status else {}),
                  **({"q": text} if text else {}), **({"owner": owner} if owner else {})}
        return self._request("GET", "tasks", params=params).json()

    def tasks_by_id(self, task_ids: builtins.list[str]) -> builtins.list[dict]:
        return self._request("POST", "tasks/wait", json={"task_ids": list(task_ids), "timeout": 0}).json()["tasks"]

    def cancel(self, task_ids: str | Iterable[str]) -> dict:
        ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        return self._request("POST", "tasks/cancel", json={"task_ids": ids}).json()

    def retry(self, task_id: str) -> TaskHandle:
        task = self._request("POST", f"tasks/{task_id}/retry").json()
        return TaskHandle(task["id"], client=self, info=task)

    def delete(self, task_id: str) -> None:
        self._request("DELETE", f"tasks/{task_id}")

    def stats(self) -> dict:
        return self._request("GET", "stats").json()

    def attempts(self, task_id: str) -> builtins.list[dict]:
        """Every attempt, oldest first: ``{attempt, worker, device, started_at, ended_at, status, reason, error}``."""
        return self._request("GET", f"tasks/{task_id}/attempts").json()["attempts"]

    def logs(self, task_id: str, offset: int = 0, attempt: int | None = None) -> dict:
        """One page (at most 1 MiB) of the log from byte ``offset``: ``{data, offset, next_offset, size,
        skipped, reset, dropped, status, attempt}``; page on from ``next_offset`` while it is below ``size``.
        Each attempt has its own log: ``attempt=N`` reads attempt N's (default: the latest attempt's)."""
        params = {"offset": offset} if attempt is None else {"offset": offset, "attempt": attempt}
        return self._request("GET", f"tasks/{task_id}/logs", params=params).json()

    def download(self, task_id: str, name: str, dest: str | os.PathLike = ".") -> str:
        """Save output ``name`` of a task; returns the file's path.

        ``dest`` is a folder (the file goes inside it, under ``name``; a missing folder is created)
        when it is an existing folder, ends with ``/``, or has no file extension (``"downloads"``);
        otherwise (``"out/model.pt"``) it is the file's own path."""
        from urllib.parse import quote

        response = self._request("GET", f"tasks/{task_id}/outputs/{quote(name)}", stream=True)
        target = _download_target(os.fspath(dest), _served_name(response) or name)  # a folder: its .zip
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        tmp = f"{target}.part"
        with open(tmp, "wb") as f:
            for chunk in response.iter_content(1024 * 1024):
                f.write(chunk)
        os.replace(tmp, target)
        return target

    def wait(self, task_ids: Iterable[str], timeout: float | None = None) -> builtins.list[dict]:
        """Block until every task has finished; returns their JSON."""
        ids = list(task_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            chunk = LONG_POLL if deadline is None else max(0.0, min(LONG_POLL, deadline - time.monotonic()))
            reply = self._request("POST", "tasks/wait", json={"task_ids": ids, "timeout": chunk}).json()
            if reply["done"]:
                return reply["tasks"]
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{sum(t['status'] not in FINAL for t in reply['tasks'])} task(s) still unfinished")

    def result(self, task_id: str, timeout: float | None = None) -> Any:
        """The task's return value, waiting for it; re-raises the task's exception.

        Notebook classes and functions in it are this kernel's own (see jupyter_taskq.pickling)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            chunk = LONG_POLL if deadline is None else max(0.0, min(LONG_POLL, deadline - time.monotonic()))
            response = self._request("GET", f"tasks/{task_id}/result", expect=(200, 202, 409),
                                     params={"wait": chunk}, stream=True)
            if response.status_code == 200:
                if response.headers.get("X-Taskq-Image"):  # ran in an image: compare its packages with ours
                    from .imagecheck import load_checked

                    return load_checked(response.content, self.get(task_id).get("environment"), pickling.loads)
                return pickling.load(response.raw)  # straight from the socket: no copy of a large result
            if response.status_code == 202:  # still running after the wait: not an error
                status = response.json().get("status")
            else:
                task = self.get(task_id)
                if task["status"] in FINAL:
                    self._raise_for(task)
                status = task["status"]
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} is still {status} after {timeout} s")

    def results(self, task_ids: Iterable[str], timeout: float | None = None,
                return_exceptions: bool = False) -> builtins.list[Any]:
        """Many tasks' results, in order, fetched in bulk (``POST tasks/results``: up to ``MAX_LIMIT`` tasks
        a request, each answered once that batch has finished) instead of one request per task. A result
        over the server's inline size comes on its own, streamed as :meth:`result` does. The first failure
        (in order) is raised once its batch has finished; with ``return_exceptions`` failures take their
        tasks' places. A ``timeout`` that passes raises ``TimeoutError``."""
        ids = list(task_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        outcome: dict[str, tuple[bool, Any]] = {}  # id -> (ok, value or exception)
        todo = list(dict.fromkeys(ids))
        for start in range(0, len(todo), MAX_LIMIT):
            batch = todo[start:start + MAX_LIMIT]
            while batch:
                chunk = LONG_POLL if deadline is None else max(0.0, min(LONG_POLL, deadline - time.monotonic()))
                pending = []
                for head, data in self._bulk(batch, chunk):
                    if head["kind"] == "pending":
                        pending.append(head["id"])
                    else:
                        outcome[head["id"]] = self._outcome(head, data, deadline)
                batch = pending
                if batch and deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"{len(batch)} task(s) still unfinished after {timeout} s")
            if not return_exceptions:
                for task_id in todo[start:start + MAX_LIMIT]:
                    ok, value = outcome[task_id]
                    if not ok:
                        raise value
        return [outcome[i][1] for i in ids]

    def _bulk(self, task_ids: builtins.list[str], wait: float = 0.0) -> Iterable[tuple[dict, bytes]]:
        """``POST tasks/results``: ``(head, bytes)`` per id, read from the socket as they come."""
        response = self._request("POST", "tasks/results", json={"task_ids": task_ids, "wait": wait}, stream=True)
        return batchstream.read_frames(response.raw)

    def finished_outcomes(self, task_ids: builtins.list[str]) -> dict[str, tuple[bool, Any]]:
        """``{id: (ok, value or exception)}`` of those of ``task_ids`` (at most ``MAX_LIMIT``) that have
        finished with a small result or a failure, in one request that does not wait; a big or expired
        result is left out (:meth:`result` streams it when it is asked for)."""
        return {head["id"]: self._outcome(head, data, None) for head, data in self._bulk(task_ids)
                if head["kind"] in ("result", "exception", "none")}

    def _outcome(self, head: dict, data: bytes, deadline: float | None) -> tuple[bool, Any]:
        """``(True, value)`` or ``(False, exception)`` for one frame of ``POST tasks/results``."""
        kind = head["kind"]
        if kind == "result":
            return True, pickling.loads(data)
        if kind in ("big", "gone"):  # streamed on its own; an expired result raises as result() does
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return True, self.result(head["id"], timeout=left)
            except Exception as error:  # noqa: BLE001 - handed back as the task's failure
                return False, error
        exc = None
        if kind == "exception":
            with contextlib.suppress(Exception):  # its class may not exist here
                exc = pickling.loads(data)
        return False, self._failure(head["task"], exc if isinstance(exc, BaseException) else None)

    def _raise_for(self, task: dict) -> None:
        exc = self._remote_exception(task["id"]) if task["status"] == TaskStatus.FAILED else None
        raise self._failure(task, exc)

    @staticmethod
    def _failure(task: dict, exc: BaseException | None) -> BaseException:
        """What a failed task raises here: its own exception, else :class:`TaskFailed`, with the remote
        traceback chained to it."""
        error = task.get("error") or {}
        failure = exc if exc is not None else TaskFailed(task)
        failure.__cause__ = RemoteTraceback(error["traceback"]) if error.get("traceback") else None
        return failure

    def _remote_exception(self, task_id: str) -> BaseException | None:
        """The task's exception as its own class (rebuilt without calling ``__init__``), or None."""
        response = self.session.get(self.api + f"tasks/{task_id}/exception")
        if response.status_code != 200:
            return None
        try:
            exc = pickling.loads(response.content)
        except Exception:  # its class may not exist here
            return None
        return exc if isinstance(exc, BaseException) else None


def _submit_signature() -> None:
    import inspect

    P = inspect.Parameter
    with_option_keywords(Client.submit, [P("self", P.POSITIONAL_OR_KEYWORD), P("fn", P.POSITIONAL_OR_KEYWORD),
                                         P("args", P.POSITIONAL_OR_KEYWORD, default=()),
                                         P("kwargs", P.POSITIONAL_OR_KEYWORD, default=None)])


_submit_signature()


def _served_name(response) -> str | None:
    """The output's own name, as the server's Content-Disposition gives it (``filename*=UTF-8''...``)."""
    from urllib.parse import unquote

    _, found, quoted = response.headers.get("Content-Disposition", "").partition("filename*=UTF-8''")
    name = unquote(quoted.strip()) if found else ""
    return name if name and "/" not in name and name not in (".", "..") else None


def _download_target(dest: str, name: str) -> str:
    """Where ``download(name, dest)`` writes: never a file named like the folder the user meant."""
    folder = (os.path.isdir(dest) or dest.endswith((os.sep, "/"))
              or (not os.path.exists(dest) and not os.path.splitext(os.path.basename(dest))[1]))
    return os.path.join(dest, name) if folder else dest


class _Stream:
    """A request body sent piece by piece with its length known (``requests`` streams any iterable
    with a ``__len__``), that can be sent again: each send iterates it afresh."""

    def __init__(self, pieces: Callable[[list], Iterable[bytes]], items: list):
        self._pieces = pieces
        self._items = items
        self._length = sum(len(piece) for piece in pieces(items))

    def __iter__(self):
        return iter(self._pieces(self._items))

    def __len__(self) -> int:
        return self._length


def interrupted_message(task_id: str | None = None, count: int = 1) -> str:
    """What Ctrl-C in ``result()``/``wait()`` says, instead of a traceback through ``requests``: waiting
    stopped, the task did not."""
    if task_id is not None:
        return f"interrupted; the task keeps running: `h.cancel()` stops it (task {task_id})"
    return f"interrupted; the {count} tasks keep running: `g.cancel()` stops them"


class PrefetchedOutcomes(Protocol):
    """What a handle of a group asks first for its outcome (group.py's shared bulk fetch)."""

    def take(self, task_id: str) -> tuple | None: ...


class TaskHandle:
    """One submitted task; also made from a bare id in a fresh kernel."""

    def __init__(self, task_id: str, client: Client | None = None, info: dict | None = None):
        self.id = task_id
        self.client = client or connect()
        self._info = info
        # a group's shared bulk fetch (group.py), when the handle is one of a group's
        self._prefetch: PrefetchedOutcomes | None = None

    def info(self) -> dict:
        self._info = self.client.get(self.id)
        return self._info

    def status(self) -> TaskStatus:
        return TaskStatus(self.info()["status"])

    @property
    def name(self) -> str | None:
        """The task's name as the server records it: the function's name, unless ``name=`` gave another."""
        info = self._info if self._info is not None else self.info()
        return info.get("name")

    def result(self, timeout: float | None = None) -> Any:
        __tracebackhide__ = True  # noqa: F841 - IPython then shows the one line of an interrupt
        found = self._prefetch.take(self.id) if self._prefetch is not None else None
        if found is not None:
            ok, value = found
            if ok:
                return value
            raise value
        try:
            return self.client.result(self.id, timeout)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(interrupted_message(self.id)) from None

    def wait(self, timeout: float | None = None) -> TaskStatus:
        __tracebackhide__ = True  # noqa: F841
        try:
            self._info = self.client.wait([self.id], timeout)[0]
        except KeyboardInterrupt:
            raise KeyboardInterrupt(interrupted_message(self.id)) from None
        return TaskStatus(self._info["status"])

    def cancel(self) -> bool:
        return self.id in self.client.cancel([self.id])["cancelled"]

    def outputs(self) -> list[dict]:
        """``[{name, size, url, expires_in}]``: the files the task saved with ``Output(path).save()``."""
        return self.info()["outputs"]

    def download(self, name: str, dest: str | os.PathLike = ".") -> str:
        return self.client.download(self.id, name, dest)

    def environment(self) -> dict | None:
        """What the task ran in, for reproducibility: ``{"spec", "hash", "packages", "python"}`` where
        ``spec`` is its ``image=`` spec, ``hash`` the image's, ``packages`` the resolved ``name==version``
        list (``uv pip freeze``). None for a task without an image, or before its image is ready."""
        info = self.info()
        env = info.get("environment")
        if not info.get("image") or not env:
            return None
        return {"spec": info["image"], "hash": env.get("hash"), "packages": env.get("packages") or [],
                "python": env.get("python")}

    def progress(self) -> dict | None:
        """``{done, total, fraction, message}`` as last reported by ``progress()`` in the task."""
        return self.info()["progress"]

    def attempts(self) -> list[dict]:
        """The attempt history: worker, device, start, end, exit reason (complete, error, timeout, worker lost,
        memory, cancelled, interrupted, crashed) and error of each attempt, oldest first."""
        return self.client.attempts(self.id)

    def logs(self, follow: bool = False, file=None, attempt: int | None = None) -> str | None:
        """The task's stdout/stderr so far, all that the log keeps (a log past its cap keeps its tail,
        after a line saying how many bytes were dropped); with ``follow=True`` print it as it comes,
        until the task ends. Each attempt has its own log: ``attempt=N`` reads attempt N's (numbers as in
        ``attempts()``), by default the latest attempt's; following, a retry's log follows the last one's.
        (``Client.logs`` reads one page of at most 1 MiB from an offset.)"""
        if not follow:
            chunk = self.client.logs(self.id, 0, attempt)
            parts = [chunk["data"]]
            while chunk["next_offset"] < chunk["size"] and chunk["data"]:
                chunk = self.client.logs(self.id, chunk["next_offset"], chunk["attempt"])
                parts.append(chunk["data"])
            return "".join(parts)
        import sys
        import time

        out, offset, current = file or sys.stdout, 0, None
        while True:
            chunk = self.client.logs(self.id, offset)
            if current is not None and chunk.get("attempt") != current:  # a retry: its own log, from its top
                out.write(f"\n[attempt {chunk['attempt']}]\n")
                if chunk["offset"]:
                    chunk = self.client.logs(self.id, 0, chunk["attempt"])
            elif chunk["reset"]:
                out.write("\n[log truncated to its tail]\n")
            current = chunk.get("attempt")
            out.write(chunk["data"])
            out.flush()
            offset = chunk["next_offset"]
            if chunk["status"] in FINAL and offset >= chunk["size"]:
                return None
            if offset >= chunk["size"]:
                time.sleep(0.25)

    def retry(self) -> TaskHandle:
        return self.client.retry(self.id)

    def _repr_mimebundle_(self, include=None, exclude=None):
        from .display import task_bundle

        return task_bundle(self)

    def __repr__(self) -> str:
        status = self._info["status"] if self._info else "?"
        return f"<TaskHandle {self.id} {status}>"


_default_client: Client | None = None
_default_found: tuple[str, str] | None = None  # the (url, token) discovery gave it


def connect(url: str | None = None, token: str | None = None, reconnect_for: float | None = None) -> Client:
    """The client every handle uses by default. With no ``url``: the server found by
    :func:`jupyter_taskq.notebook.discovery.find_server` (which may start a private one).
    ``reconnect_for``: how long calls ride out an unreachable server (see :class:`Client`)."""
    global _default_client, _default_found
    if url is None:
        from .discovery import find_server, in_task_credentials

        # In a task, the queue's URL and token are the attempt's own (jupyter_taskq/tasktokens.py): a warm
        # task process runs many attempts, and the client of an earlier one holds a token that has ended.
        current = in_task_credentials()
        if _default_client is not None and (current is None or current == _default_found):
            if reconnect_for is not None:
                _default_client.reconnect_for = _reconnect_for(reconnect_for)
            return _default_client
        url, found_token = find_server()
        _default_found = (url, found_token)
        token = found_token if token is None else token
    _default_client = Client(url, token, reconnect_for=reconnect_for)
    return _default_client


def default_client() -> Client:
    return connect()
