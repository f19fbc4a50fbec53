"""REST handlers under ``{base_url}taskq/api/``: thin HTTP over :class:`TaskService`.

Every handler goes through jupyter_server's identity provider (token, or cookie
plus XSRF) and authorizer (resource ``taskq``). Submission streams the payload to
a private spool file as it arrives, after authentication and before the body is
read, so hundreds of MB never sit in the server's memory.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import inspect
import json
import mimetypes
import os
import time
from pathlib import Path
from urllib.parse import quote

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from tornado import web
from tornado.ioloop import IOLoop

from .. import batchstream
from ..blobs import is_key
from ..options import MAX_LIMIT
from ..status import FINAL
from ..storeerrors import is_disk_full
from . import owners, taskauth
from .jsonpieces import dumps, dumps_in_pieces
from .notstarted import refuse_if_not_started
from .offloop import OffLoop, make_executor, run
from .service import ServiceError, bad_request

AUTH_RESOURCE = "taskq"
MAX_WAIT = 300.0
LINGER_BYTES = 64 * 1024 * 1024  # after an early refusal, read and dropped at most, so the client reads it
LINGER_SECONDS = 5.0  # ... and for at most this long, then the connection is closed
BODY_IDLE_TIMEOUT = 60.0  # seconds a request body may send nothing before its connection is closed (a default:
# ServerApp.tornado_settings={"taskq_body_idle_timeout": s} sets another, from 0.1 s to an hour)
MAX_JSON_BODY = 64 * 1024 * 1024
MAX_JSON_BATCH = 256 * 1024 * 1024  # base64 in JSON: Client.submit_many streams its batches instead
MAX_BATCH = 100_000  # tasks in one batch
CHUNK = 1024 * 1024
_METHOD_ACTION = {"GET": "read", "HEAD": "read", "POST": "write", "PATCH": "write", "DELETE": "write"}


class _TaskqAuth:
    """Authentication and authorization before anything else, service errors as JSON, and the
    service reached off the event loop (``await self.service.x(...)``: see :mod:`.offloop`)."""

    auth_resource = AUTH_RESOURCE

    @property
    def executor(self):
        executor = self.settings.get("taskq_executor")
        if executor is None:
            executor = self.settings["taskq_executor"] = make_executor()
        return executor

    @property
    def service(self) -> OffLoop:
        return OffLoop(owners.view(self), self.executor)  # the service as this user sees it (issue 15)

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
        await owners.guard(self)  # hub service: someone else's task id answers 404
        if not self.streams_body():
            self.hold_body()
        self._method_after_body()
        self._watch_idle_body()

    # -- the request body ----------------------------------------------------
    # Every taskq handler streams its body (tornado.web.stream_request_body). Tornado answers a body
    # over its max_body_size (Jupyter's ServerApp.max_body_size) with a bare 400 and a closed
    # connection, which no client can read a reason from; here the body is counted as it arrives
    # and one over the limit is answered with a JSON 413 naming the limit and the option raising it.
    # Uploads (_StreamedBody) spool theirs to files under their own limits; every other body is
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
        self.request.connection.set_max_body_size(1 << 62)
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
        server/hub.py) replaces jupyter_server's version with one that has no such wait."""
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


@web.stream_request_body  # every subclass too: see _TaskqAuth's request body
class TaskqHandler(_TaskqAuth, APIHandler):
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


class _StreamedBody(TaskqHandler):
    """A body that streams to spool files as it arrives, held to a limit that is answered with a
    ``413`` and a JSON message naming the limit, the size and the option that raises it.

    Tornado resets the connection of a body over its ``max_body_size``, so the client never
    reads why; here the server lets any body arrive (reading and dropping what is over the
    limit) and counts the bytes itself. A body that declares its size is refused before a
    byte of it is stored. Only ``streamed_method``'s body is spooled; any other method's is
    held to Jupyter's limit like every endpoint's (_TaskqAuth).
    """

    streamed_method = "POST"

    def streams_body(self) -> bool:
        return self.request.method == self.streamed_method

    async def data_received(self, chunk: bytes) -> None:
        """Each chunk (64 KiB) as it arrives, consumed on the thread pool: writing it to its spool
        file, and for a batch creating a spool file per task (hundreds in one chunk of tiny
        payloads), is disk I/O that would otherwise hold every other request of the server.
        Tornado awaits this before it reads the next chunk, so chunks stay in order."""
        if not self.streams_body():
            super().data_received(chunk)
            return
        if self.answered_early(chunk):
            return
        await self.blocking(self.consume, chunk)
        if self._refusal is not None:  # over its limit (or malformed): answered as soon as it is known
            self.answer_now(self._refusal)

    def consume(self, chunk: bytes) -> None:
        raise NotImplementedError


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


class _Spool:
    """One upload's private spool file, written as the bytes arrive."""

    def __init__(self, service, limit: int, what: str, digest: bool = False):
        self.path, self.fd = service.open_spool()
        self.size = 0
        self.limit = limit
        self.what = what
        self.hash = hashlib.sha256() if digest else None

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise too_large(self.what, self.size, self.limit)
        try:
            os.write(self.fd, chunk)
        except OSError as exc:
            if is_disk_full(exc):
                raise state_dir_full() from None
            raise
        if self.hash is not None:
            self.hash.update(chunk)

    def close(self) -> Path:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        return self.path

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


@web.stream_request_body
class TasksHandler(_StreamedBody):
    """GET: the task list. POST: submit one task (raw payload body, options in the query; or JSON)."""

    _spool = None  # until prepare sets it: a request refused before that (403) still finishes cleanly

    async def prepare(self):
        await super().prepare()
        self._spool: _Spool | None = None
        self._json_chunks: list[bytes] | None = None
        if self.request.method != "POST":
            return
        kind = self.request.headers.get("Content-Type", "").split(";")[0].strip()
        limit = self.settings["taskq_max_payload"]
        if kind == "application/json":
            self.limit_body(MAX_JSON_BODY, "the JSON body", option="")
            self._json_chunks, self._json_size = [], 0
        elif kind in ("application/octet-stream", "application/x-jupyter-taskq-payload"):
            self.limit_body(limit, "the payload")
            self._spool = _Spool(self.settings["taskq_service"], limit, "the payload")
        else:
            raise web.HTTPError(415, "submit a payload as application/octet-stream (options in the query string) "
                                     "or as application/json with a base64 'payload'")

    def consume(self, chunk: bytes) -> None:
        if self._refusal is not None:
            return
        if self._spool is not None:
            try:
                self._spool.write(chunk)
            except ServiceError as exc:
                self.refuse(exc)
        elif self._json_chunks is not None:
            self._json_size += len(chunk)
            if self._json_size > MAX_JSON_BODY:
                self._json_chunks = []
                self.refuse(too_large("the JSON body", self._json_size, MAX_JSON_BODY, option=""))
                return
            self._json_chunks.append(chunk)

    def discard_spools(self) -> None:
        if self._spool is not None:
            self._spool.discard()

    @authorized
    async def get(self):
        statuses = [s for s in self.get_query_argument("status", "").upper().split(",") if s]
        try:
            limit = int(self.get_query_argument("limit", "50"))
            offset = int(self.get_query_argument("offset", "0"))
        except ValueError:
            raise bad_request("'limit' and 'offset' must be integers") from None
        text = self.get_query_argument("q", "").strip()
        owner = self.get_query_argument("owner", "") or None  # a hub admin's "Mine / Everyone" (owners.py)
        notebooks = self.get_query_arguments("notebook")  # one notebook's tasks counted by cell (celltasks.ts)
        self.finish(dumps(await self.service.list(statuses, limit, offset, text=text, owner=owner,
                                                       notebooks=notebooks)))

    @authorized
    async def post(self):
        if self._refusal is not None:
            raise self._refusal
        if self._json_chunks is not None:
            self.request.body = b"".join(self._json_chunks)
            body = self.json_body()
            data = _decode_payload(body.pop("payload", None), self.settings["taskq_max_payload"])
            spooled = await self.service.spool_bytes(data)
            raw_options = body
        else:
            spooled, self._spool = self._spool.close(), None
            raw_options = {k: self.get_query_argument(k) for k in self.request.query_arguments}
        try:
            options = await self.service.validate_options(raw_options)
        except ServiceError:
            spooled.unlink(missing_ok=True)
            raise
        task = await self.service.submit(spooled, options)
        self.set_status(201)
        self.finish(dumps(task))


def _decode_payload(value, limit: int, what: str = "the payload") -> bytes:
    if not isinstance(value, str):
        raise bad_request("'payload' (the base64 of a jupyter-taskq payload) is required")
    if len(value) // 4 * 3 > limit + 2:
        raise too_large(what, len(value) // 4 * 3, limit)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("'payload' is not valid base64") from None


@web.stream_request_body
class BatchHandler(_StreamedBody):
    """POST many tasks in one request, all or none: as ``application/x-jupyter-taskq-batch``
    (:mod:`jupyter_taskq.batchstream`, each payload spooled as it streams in; what
    ``Client.submit_many`` sends), or as JSON ``{"tasks": [{"payload": base64, ...options}, ...]}``.
    Every payload is held to ``TaskQueue.max_payload_size``.

    Each payload's spool file is closed as soon as its frame ends; the batch keeps paths, not
    open files, so it holds one descriptor whatever its size (a file per queued task used to
    exhaust the process's descriptor limit and reset the connection)."""

    _current, _items = None, ()  # until prepare sets them: a request refused before that still finishes

    async def prepare(self):
        await super().prepare()
        self._items: list[tuple[dict, Path]] = []  # spooled, closed
        self._current: _Spool | None = None  # the payload being written
        self._reader: batchstream.BatchReader | None = None
        self._json_chunks: list[bytes] | None = None
        kind = self.request.headers.get("Content-Type", "").split(";")[0].strip()
        if kind == batchstream.CONTENT_TYPE:
            self.limit_body(1 << 62, "the batch")
            self._reader = batchstream.BatchReader(self._start_item, self._end_item)
        elif kind in ("application/json", ""):
            self.limit_body(MAX_JSON_BATCH, "the JSON body", option="")
            self._json_chunks, self._json_size = [], 0
        else:
            raise web.HTTPError(415, f"submit a batch as {batchstream.CONTENT_TYPE} or as application/json")

    def _start_item(self, index: int, options: dict, size: int):
        if len(self._items) >= MAX_BATCH:
            raise bad_request(f"a batch holds at most {MAX_BATCH:,} tasks; send several batches")
        what = f"tasks[{index}]: the payload"
        limit = self.settings["taskq_max_payload"]
        if size > limit:
            raise too_large(what, size, limit)
        self._current = _Spool(self.settings["taskq_service"], limit, what)
        self._items.append((options, self._current.path))
        return self._current.write

    def _end_item(self, index: int) -> None:
        self._current.close()
        self._current = None

    def consume(self, chunk: bytes) -> None:
        if self._refusal is not None:
            return
        if self._reader is not None:
            try:
                self._reader.feed(chunk)
            except batchstream.BatchFormatError as exc:
                self.refuse(bad_request(str(exc)))
            except ServiceError as exc:
                self.refuse(exc)
            return
        self._json_size += len(chunk)
        if self._json_size > MAX_JSON_BATCH:
            self._json_chunks = []
            self.refuse(too_large("the JSON body", self._json_size, MAX_JSON_BATCH, option=""))
            return
        self._json_chunks.append(chunk)

    def discard_spools(self) -> None:
        if self._current is not None:
            self._current.discard()
            self._current = None
        for _options, path in self._items:
            path.unlink(missing_ok=True)
        self._items = []

    @authorized
    async def post(self):
        if self._refusal is None and self._reader is not None:
            try:
                self._reader.close()
            except batchstream.BatchFormatError as exc:
                self.refuse(bad_request(str(exc)))
        if self._refusal is not None:
            raise self._refusal
        # Parsing and validating 20,000 tasks takes a while: not on the event loop.
        # The JSON of 20,000 tasks takes a while to write too: off the loop with the rest.
        answer = await self.blocking(lambda: dumps_in_pieces({"tasks": self._submit_batch()}))
        self.set_status(201)
        self.finish(answer)

    def _submit_batch(self) -> list[dict]:
        service = owners.view(self)
        if self._json_chunks is not None:
            self.request.body = b"".join(self._json_chunks)
            self._json_chunks = None
            self._spool_json_items(service, self.json_body().get("tasks"))
        if not self._items:
            raise bad_request("a batch must hold at least one task")
        prepared = []
        for index, (options, path) in enumerate(self._items):  # validate all before queuing any
            try:
                prepared.append((path, service.validate_options(options)))
            except ServiceError as exc:
                raise bad_request(f"tasks[{index}]: {exc}") from None
        created = service.submit_many(prepared)
        self._items = []  # the service took the spool files over
        return created

    def _spool_json_items(self, service, items) -> None:
        if not isinstance(items, list) or not items:
            raise bad_request("'tasks' must be a non-empty list of {payload, ...options} objects")
        if len(items) > MAX_BATCH:
            raise bad_request(f"a batch holds at most {MAX_BATCH:,} tasks; send several batches")
        limit = self.settings["taskq_max_payload"]
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise bad_request(f"tasks[{index}] must be an object")
            item = dict(item)
            try:
                data = _decode_payload(item.pop("payload", None), limit, f"tasks[{index}]: the payload")
            except ServiceError as exc:
                if exc.status == 413:
                    raise
                raise bad_request(f"tasks[{index}]: {exc}") from None
            spool = _Spool(service, limit, f"tasks[{index}]: the payload")
            self._items.append((item, spool.path))
            try:
                spool.write(data)
            finally:
                spool.close()


@web.stream_request_body
class BlobHandler(_StreamedBody):
    """A part shared by many payloads (:mod:`jupyter_taskq.blobs`), named by its sha256.

    ``HEAD``: 200 if the server has it (and keeps it a while longer for the batch that
    follows), else 404; either way ``X-Taskq-Max-Payload-Size`` says the limit, so a client
    can refuse an oversized part before sending it. ``PUT``: the bytes, streamed; the hash is
    checked as they arrive. 201 when stored, 200 when the server had it already."""

    _spool = None  # until prepare sets it: a request refused before that (403) still finishes cleanly
    streamed_method = "PUT"

    async def prepare(self):
        await super().prepare()
        self._spool: _Spool | None = None
        key = self.path_kwargs["key"]
        if not is_key(key):
            raise bad_request(f"a blob is named by the sha256 of its bytes, in lower-case hex; got {key!r}")
        self.set_header("X-Taskq-Max-Payload-Size", str(self.settings["taskq_max_payload"]))
        if self.request.method == "PUT":
            limit = self.settings["taskq_max_payload"]
            self.limit_body(limit, "the shared part of the payload")
            self._spool = _Spool(self.settings["taskq_service"], limit, "the shared part of the payload", digest=True)

    def consume(self, chunk: bytes) -> None:
        if self._refusal is None and self._spool is not None:
            try:
                self._spool.write(chunk)
            except ServiceError as exc:
                self.refuse(exc)

    def discard_spools(self) -> None:
        if self._spool is not None:
            self._spool.discard()

    @authorized
    async def head(self, key):
        if not await self.service.has_blob(key):
            self.set_status(404)
        self.finish()

    @authorized
    async def put(self, key):
        if self._refusal is not None:
            raise self._refusal
        spool, self._spool = self._spool, None
        digest = spool.hash.hexdigest()
        if digest != key:
            spool.discard()
            raise bad_request(f"the body's sha256 is {digest}, not the {key} it was sent as")
        created = await self.service.put_blob(key, spool.close())
        self.set_status(201 if created else 200)
        self.finish(dumps({"blob": key, "size": spool.size, "created": created}))


class CancelHandler(TaskqHandler):
    @authorized
    async def post(self):
        body = self.json_body()
        if "task_ids" not in body:
            raise bad_request('body must be {"task_ids": [...]}')
        self.finish(dumps(await self.service.cancel(body["task_ids"])))


class WaitHandler(TaskqHandler):
    """POST ``{"task_ids": [...], "timeout": s}``: answers when all have finished, or at the timeout."""

    @authorized
    async def post(self):
        body = self.json_body()
        ids = body.get("task_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise bad_request('"task_ids" must be a list of task id strings')
        timeout = body.get("timeout", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout <= MAX_WAIT:
            raise bad_request(f"'timeout' must be a number of seconds between 0 and {MAX_WAIT:g}")
        done = await self.wait_final(ids, timeout)
        tasks = await self.service.tasks_by_id(ids)
        self.finish(await self.blocking(dumps_in_pieces, {"done": done, "tasks": tasks}))  # 2,000 tasks: off the loop


class ResultsHandler(TaskqHandler):
    """POST ``{"task_ids": [...], "wait": s}``: many tasks' outcomes in one answer, a stream of
    :mod:`jupyter_taskq.batchstream` frames (a JSON head, then the pickled bytes) in the ids' order; see
    ``TaskService.results_many`` for what each head says. With ``wait``, it first waits (at most that long)
    for all of them to finish; those still running come back as ``pending``. At most ``MAX_LIMIT`` ids."""

    @authorized
    async def post(self):
        body = self.json_body()
        ids = body.get("task_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise bad_request('body must be {"task_ids": [...]} (a list of task id strings)')
        if len(ids) > MAX_LIMIT:
            raise bad_request(f"at most {MAX_LIMIT} task ids per request, got {len(ids)}")
        wait = body.get("wait", 0)
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_WAIT:
            raise bad_request(f"'wait' must be a number of seconds between 0 and {MAX_WAIT:g}")
        if wait and ids:
            await self.wait_final(ids, wait)
        view = owners.view(self)
        answer = await self.blocking(lambda: b"".join(batchstream.frames(view.results_many(ids))))
        self.set_header("Content-Type", batchstream.CONTENT_TYPE)
        for start in range(0, len(answer), CHUNK):  # hands the loop back between pieces of a big answer
            self.write(answer[start:start + CHUNK])
            await self.flush()
        await self.finish()


class TaskHandler(TaskqHandler):
    @authorized
    async def get(self, task_id):
        wait = self.wait_seconds()
        task = await self.service.get(task_id)
        if wait and task["status"] not in FINAL:
            await self.wait_final([task_id], wait)
            task = await self.service.get(task_id)
        self.finish(dumps(task))

    @authorized
    async def delete(self, task_id):
        await self.service.delete(task_id)
        self.set_status(204)
        self.finish()


class RetryHandler(TaskqHandler):
    @authorized
    async def post(self, task_id):
        task = await self.service.retry(task_id)
        self.set_status(201)
        self.finish(dumps(task))


class ResultHandler(TaskqHandler):
    """The dill bytes of the return value; 409 until COMPLETE. ``?wait=s`` waits for the end first, and a
    task still unfinished after the wait answers 202 (expected in a long-poll: no warning in the log)."""

    @authorized
    async def get(self, task_id):
        wait = self.wait_seconds()
        task = await self.service.get_task(task_id)  # 404 before waiting
        if wait and not await self.wait_final([task_id], wait):
            task = await self.service.get_task(task_id)
            if task["status"] not in FINAL:
                self.set_status(202)
                self.finish(dumps({"status": task["status"],
                                        "message": f"task {task_id} is still {task['status']}; ask again"}))
                return
        path = await self.service.result_path(task_id)
        task = await self.service.get_task(task_id)
        if (task.get("environment") or {}).get("hash"):  # ran in an image: the kernel compares its packages
            self.set_header("X-Taskq-Image", task["environment"]["hash"])
        await self.send_file(path, f"{task_id}.result")


class ExceptionHandler(TaskqHandler):
    """The dill bytes of the exception a FAILED task raised, when it could be pickled."""

    @authorized
    async def get(self, task_id):
        await self.send_file(await self.service.error_pickle_path(task_id), f"{task_id}.exception")


class LogsHandler(TaskqHandler):
    """``?offset=N``: the log from byte N, also while the task runs; pass back ``next_offset`` to follow.
    ``&attempt=K``: attempt K's own log (default: the latest attempt's)."""

    @authorized
    async def get(self, task_id):
        raw = self.get_query_argument("offset", "0")
        try:
            offset = int(raw)
        except ValueError:
            raise bad_request(f"'offset' must be an integer, got {raw!r}") from None
        attempt = self.get_query_argument("attempt", None)
        self.finish(dumps(await self.service.log_chunk(task_id, offset, attempt=attempt)))


@web.stream_request_body  # a body sent with a download is held to Jupyter's limit too (_TaskqAuth)
class OutputHandler(_TaskqAuth, JupyterHandler, web.StaticFileHandler):
    """Downloads a registered output file, with ranges, the right type and an attachment name.

    A StaticFileHandler (for its ranges), so not an APIHandler: it checks the request's
    Origin itself, as every API handler does. What it serves is read from the fd that
    ``TaskService.open_output`` opened without following any symbolic link, never from a
    path looked up again. The name arrives unquoted by Tornado and is not unquoted twice:
    an output called ``a%20b.txt`` downloads from the URL the task advertises."""

    _fd: int | None = None

    async def prepare(self):
        await super().prepare()
        if not self.check_origin():
            raise web.HTTPError(404)

    @authorized
    async def get(self, task_id, name, include_body=True):
        self._fd, name = await self.service.open_output(task_id, name)  # a folder's name: its zip's
        self._stat_result = os.fstat(self._fd)
        self.root = "/"
        self.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(name)}")
        await web.StaticFileHandler.get(self, name, include_body)

    @authorized
    async def head(self, task_id, name):
        await self.get(task_id, name, include_body=False)

    def validate_absolute_path(self, root, absolute_path):
        return absolute_path  # checked when it was opened (open_output); only its fd is read

    def get_content(self, abspath, start=None, end=None):
        """The bytes from the opened fd (Tornado's own reads the path again)."""
        fd, position = self._fd, start or 0
        end = self._stat_result.st_size if end is None else end
        while position < end:
            chunk = os.pread(fd, min(CHUNK, end - position), position)
            if not chunk:
                return
            position += len(chunk)
            yield chunk

    def on_finish(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        super().on_finish()

    def compute_etag(self):
        return None  # tornado would hash the whole (possibly huge) file for an etag

    def get_content_type(self):
        return mimetypes.guess_type(self.absolute_path)[0] or "application/octet-stream"


class ChangesHandler(TaskqHandler):
    """``?since=<cursor>&wait=s``: the ids changed after ``cursor`` (``null``: refetch everything) and the
    next cursor; with ``wait`` it answers as soon as something changes. The Lab panel long-polls this."""

    @authorized
    async def get(self):
        wait = self.wait_seconds()
        since = self.get_query_argument("since", "")
        answer = await self.changes.changes(since, wait, self.service.fingerprint)
        if answer["changed"]:  # hub service: only this user's tasks (owners.py)
            answer["changed"] = await self.service.visible_ids(answer["changed"])
        self.finish(dumps(answer))


class StatsHandler(TaskqHandler):
    @authorized
    async def get(self):
        self.finish(dumps(await self.service.stats()))


class MetricsHandler(TaskqHandler):
    """The queue's Prometheus metrics, in the text format (server/metrics.py; scrape with a token:
    ``Authorization: token ...``, Prometheus's ``authorization: {type: token, credentials: ...}``)."""

    @authorized
    async def get(self):
        from .metrics import CONTENT_TYPE

        self.finish(await self.service.metrics(), set_content_type=CONTENT_TYPE)


class WarmHandler(TaskqHandler):
    """DELETE: every worker ends its warm task processes (they show in ``GET stats``, per worker)."""

    @authorized
    async def delete(self):
        self.finish(dumps(await self.service.drop_warm()))


def handlers(base_url: str) -> list[tuple]:
    from .attempts import handlers as attempt_handlers  # these modules build on this one's handlers
    from .display import handlers as display_handlers
    from .groups import handlers as group_handlers
    from .schedules import handlers as schedule_handlers

    api = base_url.rstrip("/") + "/taskq/api"
    task = r"(?P<task_id>[^/]+)"
    return [
        (f"{api}/tasks", TasksHandler),
        (f"{api}/tasks/batch", BatchHandler),
        (f"{api}/blobs/(?P<key>[^/]+)", BlobHandler),
        (f"{api}/tasks/cancel", CancelHandler),
        (f"{api}/tasks/wait", WaitHandler),
        (f"{api}/tasks/results", ResultsHandler),
        (f"{api}/tasks/{task}", TaskHandler),
        (f"{api}/tasks/{task}/retry", RetryHandler),
        (f"{api}/tasks/{task}/result", ResultHandler),
        (f"{api}/tasks/{task}/exception", ExceptionHandler),
        (f"{api}/tasks/{task}/logs", LogsHandler),
        (f"{api}/tasks/{task}/outputs/(?P<name>[^/]+)", OutputHandler, {"path": "/nonexistent"}),
        (f"{api}/stats", StatsHandler),
        (f"{api}/metrics", MetricsHandler),
        (f"{api}/warm", WarmHandler),
        (f"{api}/changes", ChangesHandler),
        *group_handlers(api),
        *schedule_handlers(api),
        *attempt_handlers(api),
        *display_handlers(api),
    ]
