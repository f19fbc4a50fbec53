"""The base of every taskq REST handler: authentication, the request body's limits, errors as JSON.

Every handler goes through jupyter_server's identity provider (token, or cookie plus XSRF) and
authorizer (resource ``taskq``), then the tenancy (:mod:`jupyter_taskq.hub.tenancy`: who is asking,
which tasks they may see). Resource modules in this package subclass :class:`TaskqHandler`;
``routes.py`` alone lists them, so this module imports none of them.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

from jupyter_server.auth.decorator import authorized  # noqa: F401  (re-exported for the resource modules)
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from tornado import web
from tornado.http1connection import HTTP1Connection
from tornado.ioloop import IOLoop

from ... import batchstream
from ...storeerrors import is_disk_full
from ...hub.tenancy import Identity, Tenancy
from .. import taskauth
from ..jsonpieces import dumps
from ..notstarted import refuse_if_not_started
from ..offloop import OffLoop, make_executor, run
from ..service import ServiceError, bad_request

AUTH_RESOURCE = "taskq"
MAX_WAIT = 300.0
LINGER_BYTES = 64 * 1024 * 1024  # after an early refusal, read and dropped at most, so the client reads it
LINGER_SECONDS = 5.0  # ... and for at most this long, then the connection is closed
BODY_IDLE_TIMEOUT = 60.0  # seconds a request body may send nothing before its connection is closed (a default:
# ServerApp.tornado_settings={"taskq_body_idle_timeout": s} sets another, from 0.1 s to an hour)
CHUNK = 1024 * 1024
_METHOD_ACTION = {"GET": "read", "HEAD": "read", "POST": "write", "PATCH": "write", "DELETE": "write"}


if TYPE_CHECKING:  # a mixin of Jupyter's handlers (TaskqHandler, files.OutputHandler): their attributes
    _HandlerBase = JupyterHandler
else:  # at run time a plain mixin, so the method order stays the subclasses' own
    _HandlerBase = object


class TaskqAuth(_HandlerBase):
    """Authentication and authorization before anything else, service errors as JSON, and the
    service reached off the event loop (``await self.service.x(...)``: see :mod:`.offloop`)."""

    auth_resource = AUTH_RESOURCE

    @property
    def executor(self):
        executor = self.settings.get("taskq_executor")
        if executor is None:
            executor = self.settings["taskq_executor"] = make_executor()
        return executor

    #: For whom this route is open on the hub-wide queue: one of hub/tenancy.py's ROUTE_SCOPES. None: refused to
    #: hub users (fails closed: tests/test_tenancy.py holds every route in routes.py to a declared scope).
    hub_scope: str | None = None
    me: Identity | None = None  # who asks: set in prepare, after authentication
    _taskq_identity: Identity | None = None  # a task token's owner: set by taskauth before prepare asks the tenancy

    @property
    def tenancy(self) -> Tenancy:
        return self.settings["taskq_tenancy"]

    def view(self):
        """The service as this user sees it (issue 15), blocking: for code already on the thread pool."""
        return self.tenancy.scope(self.settings["taskq_service"], self.me)

    @property
    def service(self) -> OffLoop:
        return OffLoop(self.view(), self.executor)  # the service as this user sees it, off the event loop

    @property
    def identity_provider(self):
        """Jupyter's, which also takes the task tokens of running tasks (:mod:`.taskauth`): these
        handlers only, so a task token opens the taskq API and nothing else of Jupyter."""
        return taskauth.provider_for(self.settings, super().identity_provider)

    async def blocking(self, fn, *args, **kwargs):
        """Run a blocking function (parsing a large body, a file copy) on the service's thread pool."""
        return await run(self.executor, fn, *args, **kwargs)

    async def prepare(self):
        await super().prepare()
        # Refuse before any body is read or stored: streamed uploads come before the method runs.
        if self.current_user is None:
            raise web.HTTPError(403, "authentication required (a Jupyter token or login cookie)")
        refuse_if_not_started(self)
        action = _METHOD_ACTION.get(self.request.method, "write")
        if not taskauth.by_task_token(self) and \
                not self.authorizer.is_authorized(self, self.current_user, action, AUTH_RESOURCE):
            raise web.HTTPError(403, f"not authorized to {action} {AUTH_RESOURCE}")
        await self.admit_tenant()
        if not self.streams_body():
            self.hold_body()
        self._method_after_body()
        self._watch_idle_body()

    async def admit_tenant(self) -> None:
        """Who asks (the tenancy's identity); on the hub-wide queue, a route not declared for its users is
        refused, and someone else's task named in the URL answers 404, before the handler (or its upload) runs."""
        self.me = await self.tenancy.identify(self.current_user) if self._taskq_identity is None \
            else self._taskq_identity  # a task token's, set by taskauth
        if not self.tenancy.admits_route(type(self)):
            raise web.HTTPError(403, f"{self.request.path} is not open to users of the hub's task queue")
        task_id = self.path_kwargs.get("task_id")
        if task_id:
            await self.blocking(self.tenancy.guard, self.settings["taskq_service"].store, task_id, self.me)

    # -- the request body ----------------------------------------------------
    # Every taskq handler streams its body (tornado.web.stream_request_body). Tornado answers a body
    # over its max_body_size (Jupyter's ServerApp.max_body_size) with a bare 400 and a closed
    # connection, which no client can read a reason from; here the body is counted as it arrives
    # and one over the limit is answered with a JSON 413 naming the limit and the option raising it.
    # Uploads (StreamedBody) spool theirs to files under their own limits; every other body is
    # held in memory under Jupyter's limit, as tornado did, and is request.body when the method runs.

    _refusal: ServiceError | None = None
    _body_chunks: list[bytes] | None = None
    _body_size = 0
    _body_limit = 0

    def streams_body(self) -> bool:
        """True where this request's body goes to ``consume`` (spooled), not to ``request.body``."""
        return False

    def hold_body(self) -> None:
        self._body_chunks, self._body_size = [], 0
        self._body_limit = self.max_body_size()
        self.limit_body(self._body_limit, "the request body", option="ServerApp.max_body_size")

    def max_body_size(self) -> int:
        """What tornado would hold this body to: Jupyter's ServerApp.max_body_size (512 MB by default)."""
        limit = getattr(getattr(self.request.connection, "params", None), "max_body_size", None)
        if limit is None:
            limit = getattr(self.settings.get("serverapp"), "max_body_size", None)
        return limit or 100 * 1024 * 1024  # tornado's own default (its max_buffer_size)

    def data_received(self, chunk: bytes):
        if self.answered_early(chunk) or self._body_chunks is None:  # refused, or prepare never got so far (403)
            return None
        self._body_size += len(chunk)
        if self._body_size > self._body_limit:
            self._body_chunks = None
            self.refuse(too_large("the request body", self._body_size, self._body_limit, "ServerApp.max_body_size"))
            return None
        self._body_chunks.append(chunk)
        return None

    def _method_after_body(self) -> None:
        """Tornado calls the method once the whole body is in: first the body becomes ``request.body``,
        or its refusal is raised (the method of this request only, on this handler only)."""
        name = self.request.method.lower()
        method = getattr(self, name, None)
        if method is None:
            return

        async def after_body(*args, **kwargs):
            self._body_in = True
            if self._answered:  # refused while it arrived, and answered then (answer_now)
                self._end_linger()
                return None
            if self._refusal is not None:
                raise self._refusal
            if self._body_chunks is not None:
                self.request.body, self._body_chunks = b"".join(self._body_chunks), None
            result = method(*args, **kwargs)
            if result is not None and inspect.isawaitable(result):
                result = await result
            return result

        setattr(self, name, after_body)

    def limit_body(self, limit: int, what: str, option: str = "TaskQueue.max_payload_size") -> None:
        """Refuse a body that declares a size over ``limit``: answered at once (:meth:`answer_now`)."""
        cast(HTTP1Connection, self.request.connection).set_max_body_size(1 << 62)
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            self.answer_now(too_large(what, int(declared), limit, option))

    def refuse(self, refusal: ServiceError) -> None:
        """Refuse from data_received (raising there would reset the connection): answered after the body."""
        if self._refusal is None:
            self._refusal = refusal
        self._body_chunks = None
        self.discard_spools()

    def discard_spools(self) -> None:
        """Remove what this request spooled that no task took over."""

    # -- refusing a body while it arrives ------------------------------------------------------------
    # A body over its limit is answered as soon as it passes it: reading it to its end first (so the
    # client, still sending, reads the answer rather than a reset) let a chunked body that never ends
    # be read forever (8.3 GB in 40 s, a core busy). Now the answer goes out at once, complete (it has a
    # Content-Length), and what the client still sends is read and dropped for a moment (LINGER_BYTES,
    # LINGER_SECONDS: a client that sends its whole body before reading gets to read it), then the
    # connection is closed. A body that sends nothing for taskq_body_idle_timeout is closed the same way.

    _answered = False  # the refusal went out before the body ended
    _lingered = 0
    _linger_timer = None
    _idle_timer = None
    _body_seen_at = 0.0

    def answer_now(self, refusal: ServiceError) -> None:
        """Send ``refusal``'s JSON now, while the body still arrives, and close once it has been read."""
        self.refuse(refusal)
        if self._answered or self._finished:
            return
        self._answered = True
        body = dumps({"message": str(refusal), "reason": refusal.reason}).encode()
        self.clear()
        self.set_status(refusal.status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Content-Length", str(len(body)))
        self.set_header("Connection", "close")
        self.write(body)
        self.flush().add_done_callback(lambda f: f.exception())  # a client gone meanwhile: nothing to tell
        self._linger_timer = IOLoop.current().call_later(LINGER_SECONDS, self._end_linger)

    def answered_early(self, chunk: bytes) -> bool:
        """Count ``chunk`` of the body; True if it is to be dropped (the answer went out already)."""
        self._body_seen_at = time.monotonic()
        if not self._answered:
            return False
        self._lingered += len(chunk)
        if self._lingered > LINGER_BYTES:
            self._end_linger()
        return True

    def _end_linger(self) -> None:
        if not self._finished:
            try:
                self.finish()  # the body is not all read: tornado closes the connection once this is sent
            except Exception:  # noqa: BLE001 - the client went away meanwhile
                pass

    def body_idle_timeout(self) -> float:
        """Seconds a body may send nothing: the taskq_body_idle_timeout setting if it is a number from 0.1
        to 3600, else :data:`BODY_IDLE_TIMEOUT`."""
        value = self.settings.get("taskq_body_idle_timeout", BODY_IDLE_TIMEOUT)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.1 <= value <= 3600:
            return BODY_IDLE_TIMEOUT
        return float(value)

    def _watch_idle_body(self) -> None:
        """A request with a body to come is closed (a JSON 408 first) if the body sends nothing for the idle
        time: one byte every 10 s used to hold a connection, a spool file and its handler for ever."""
        headers = self.request.headers
        declared = headers.get("Content-Length", "")
        if not ("chunked" in headers.get("Transfer-Encoding", "").lower() or (declared.isdigit() and int(declared))):
            return
        self._body_seen_at = time.monotonic()
        self._idle_timer = IOLoop.current().call_later(self.body_idle_timeout(), self._check_idle)

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self._body_in or self._finished or self._answered:
            return
        idle = self.body_idle_timeout()
        quiet = time.monotonic() - self._body_seen_at
        if quiet < idle:
            self._idle_timer = IOLoop.current().call_later(idle - quiet, self._check_idle)
            return
        self.answer_now(ServiceError(408, f"the request body sent nothing for {idle:g} s, so the connection is "
                                          "closed; send the body without pauses", "request timeout"))
        self._end_linger()

    _body_in = False  # the whole body arrived and the method was called

    def finish(self, chunk=None, **kwargs):
        """A request answered before its body was read (refused in ``prepare``: no login, a foreign
        Origin, someone else's task) has its connection closed by tornado once answered, since a
        streamed body cannot be skipped: say so (``Connection: close``), or a client that reuses
        the connection writes its next request into a closing socket and reads a reset."""
        if not self._body_in:
            self.set_header("Connection", "close")
        return super().finish(chunk, **kwargs)  # APIHandler's set_content_type (the metrics' text format)

    def on_finish(self) -> None:
        self.discard_spools()
        for timer in (self._idle_timer, self._linger_timer):
            if timer is not None:
                IOLoop.current().remove_timeout(timer)
        super().on_finish()

    def on_connection_close(self) -> None:
        self.discard_spools()
        super().on_connection_close()

    def check_xsrf_cookie(self):
        """Not before authentication (Tornado asks before ``prepare``): jupyter_server checks again once the
        user is known, when a token needs none. Ours, because JupyterHub's service auth (the hub service,
        hub/service.py) replaces jupyter_server's version with one that has no such wait."""
        if not hasattr(self, "_jupyter_current_user") or taskauth.by_task_token(self):  # a header, not a cookie
            return None
        return super().check_xsrf_cookie()

    def _handle_request_exception(self, e: BaseException) -> None:
        if is_disk_full(e):
            e = state_dir_full()
        if isinstance(e, ServiceError) and not self._finished:
            self.clear()
            self.set_status(e.status)
            self.set_header("Content-Type", "application/json")
            self.finish(dumps({"message": str(e), "reason": e.reason}))
            return
        super()._handle_request_exception(e)


@web.stream_request_body  # every subclass too: see TaskqAuth's request body
class TaskqHandler(TaskqAuth, APIHandler):
    @property
    def changes(self):
        return self.settings["taskq_changes"]

    def json_body(self) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError as exc:
            raise bad_request(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise bad_request("request body must be a JSON object")
        return body

    def wait_seconds(self) -> float:
        raw = self.get_query_argument("wait", "0")
        try:
            wait = float(raw)
        except ValueError:
            raise bad_request(f"'wait' must be a number of seconds, got {raw!r}") from None
        if not 0 <= wait <= MAX_WAIT:
            raise bad_request(f"'wait' must be between 0 and {MAX_WAIT:g} seconds")
        return wait

    async def wait_final(self, task_ids: list[str], timeout: float) -> bool:
        """Wait until every task has finished; each check looks only at those still unfinished that the
        change feed heard change (all of them at the first check and at each re-check for a missed ring)."""
        unfinished = set(task_ids)

        async def done(look: set[str] | None) -> bool:
            ids = unfinished if look is None else unfinished & look
            if ids:
                unfinished.difference_update(await self.service.finished(list(ids)))
            return not unfinished

        return await self.changes.wait_until(unfinished, done, timeout)

    async def send_file(self, path: Path, filename: str) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Disposition", f'attachment; filename="{filename}"')
        self.set_header("Content-Length", str(path.stat().st_size))
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                self.write(chunk)
                await self.flush()
        await self.finish()


def too_large(what: str, size: int, limit: int, option: str = "TaskQueue.max_payload_size") -> ServiceError:
    if option:
        how = f"the server's {option} raises it (c.{option} = ... in jupyter_server_config.py)"
    else:
        how = (f"send payloads streamed instead: POST tasks as application/octet-stream, or POST tasks/batch as "
               f"{batchstream.CONTENT_TYPE} (Client.submit and Client.submit_many do)")
    return ServiceError(413, f"{what} is {size:,} bytes, over the limit of {limit:,} bytes; {how}",
                        "payload too large")


def state_dir_full() -> ServiceError:
    """``507``: a full state directory is the server's condition, not a bad request."""
    return ServiceError(507, "the task queue's state directory is full: nothing new can be stored until space "
                             "is freed (DELETE finished tasks, or free space on its disk)", "insufficient storage")
