"""``tasks`` and ``tasks/batch``: the task list, and submitting one task or many (all or none)."""

from __future__ import annotations

from pathlib import Path

from tornado import web

from ... import batchstream
from ..jsonpieces import dumps, dumps_in_pieces
from ..service import ServiceError, bad_request
from .base import authorized, too_large
from .uploads import Spool, StreamedBody, decode_payload

MAX_JSON_BODY = 64 * 1024 * 1024
MAX_JSON_BATCH = 256 * 1024 * 1024  # base64 in JSON: Client.submit_many streams its batches instead
MAX_BATCH = 100_000  # tasks in one batch


@web.stream_request_body
class TasksHandler(StreamedBody):
    """GET: the task list. POST: submit one task (raw payload body, options in the query; or JSON)."""

    hub_scope = "own"

    _spool = None  # until prepare sets it: a request refused before that (403) still finishes cleanly

    async def prepare(self):
        await super().prepare()
        self._spool: Spool | None = None
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
            self._spool = Spool(self.settings["taskq_service"], limit, "the payload")
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
        owner = self.get_query_argument("owner", "") or None  # a hub admin's "Mine / Everyone" (hub/owners.py)
        notebooks = self.get_query_arguments("notebook")  # one notebook's tasks counted by cell (celltasks.ts)
        self.finish(dumps(await self.service.list(statuses, limit, offset, text=text, owner=owner,
                                                       notebooks=notebooks)))

    @authorized
    async def post(self):
        await self.body_received()
        if self._refusal is not None:
            raise self._refusal
        if self._json_chunks is not None:
            self.request.body = b"".join(self._json_chunks)
            body = self.json_body()
            data = decode_payload(body.pop("payload", None), self.settings["taskq_max_payload"])
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


@web.stream_request_body
class BatchHandler(StreamedBody):
    """POST many tasks in one request, all or none: as ``application/x-jupyter-taskq-batch``
    (:mod:`jupyter_taskq.batchstream`, each payload spooled as it streams in; what
    ``Client.submit_many`` sends), or as JSON ``{"tasks": [{"payload": base64, ...options}, ...]}``.
    Every payload is held to ``TaskQueue.max_payload_size``.

    Each payload's spool file is closed as soon as its frame ends; the batch keeps paths, not
    open files, so it holds one descriptor whatever its size (a file per queued task used to
    exhaust the process's descriptor limit and reset the connection)."""

    hub_scope = "own"

    # Until prepare sets them: a request refused before that still finishes (the class's list is never appended
    # to: prepare gives each request its own).
    _current: Spool | None = None
    _items: list[tuple[dict, Path]] = []

    async def prepare(self):
        await super().prepare()
        self._items: list[tuple[dict, Path]] = []  # spooled, closed
        self._current: Spool | None = None  # the payload being written
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
        self._current = Spool(self.settings["taskq_service"], limit, what)
        self._items.append((options, self._current.path))
        return self._current.write

    def _end_item(self, index: int) -> None:
        assert self._current is not None  # the reader ends only an item it started
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
        assert self._json_chunks is not None  # a JSON body (prepare): the batch reader's returned above
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
        await self.body_received()
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
        service = self.view()
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
                data = decode_payload(item.pop("payload", None), limit, f"tasks[{index}]: the payload")
            except ServiceError as exc:
                if exc.status == 413:
                    raise
                raise bad_request(f"tasks[{index}]: {exc}") from None
            spool = Spool(service, limit, f"tasks[{index}]: the payload")
            self._items.append((item, spool.path))
            try:
                spool.write(data)
            finally:
                spool.close()
