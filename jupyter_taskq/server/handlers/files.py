"""Bytes that travel as files: shared payload parts (``blobs/<sha256>``), a task's result, exception and outputs."""

from __future__ import annotations

import mimetypes
import os
from urllib.parse import quote

from jupyter_server.base.handlers import JupyterHandler
from tornado import web

from ...blobs import is_key
from ...status import FINAL
from ..jsonpieces import dumps
from ..service import ServiceError
from .base import CHUNK, TaskqAuth, TaskqHandler, authorized, bad_request
from .uploads import Spool, StreamedBody

@web.stream_request_body
class BlobHandler(StreamedBody):
    """A part shared by many payloads (:mod:`jupyter_taskq.blobs`), named by its sha256.

    ``HEAD``: 200 if the server has it (and keeps it a while longer for the batch that
    follows), else 404; either way ``X-Taskq-Max-Payload-Size`` says the limit, so a client
    can refuse an oversized part before sending it. ``PUT``: the bytes, streamed; the hash is
    checked as they arrive. 201 when stored, 200 when the server had it already."""

    hub_scope = "own"

    _spool = None  # until prepare sets it: a request refused before that (403) still finishes cleanly
    streamed_method = "PUT"

    async def prepare(self):
        await super().prepare()
        self._spool: Spool | None = None
        key = self.path_kwargs["key"]
        if not is_key(key):
            raise bad_request(f"a blob is named by the sha256 of its bytes, in lower-case hex; got {key!r}")
        self.set_header("X-Taskq-Max-Payload-Size", str(self.settings["taskq_max_payload"]))
        if self.request.method == "PUT":
            limit = self.settings["taskq_max_payload"]
            self.limit_body(limit, "the shared part of the payload")
            self._spool = Spool(self.settings["taskq_service"], limit, "the shared part of the payload", digest=True)

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
        await self.body_received()
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


class ResultHandler(TaskqHandler):
    """The dill bytes of the return value; 409 until COMPLETE. ``?wait=s`` waits for the end first, and a
    task still unfinished after the wait answers 202 (expected in a long-poll: no warning in the log)."""

    hub_scope = "url-task"

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

    hub_scope = "url-task"

    @authorized
    async def get(self, task_id):
        await self.send_file(await self.service.error_pickle_path(task_id), f"{task_id}.exception")


@web.stream_request_body  # a body sent with a download is held to Jupyter's limit too (TaskqAuth)
class OutputHandler(TaskqAuth, JupyterHandler, web.StaticFileHandler):
    """Downloads a registered output file, with ranges, the right type and an attachment name.

    A StaticFileHandler (for its ranges), so not an APIHandler: it checks the request's
    Origin itself, as every API handler does. What it serves is read from the fd that
    ``TaskService.open_output`` opened without following any symbolic link, never from a
    path looked up again. The name arrives unquoted by Tornado and is not unquoted twice:
    an output called ``a%20b.txt`` downloads from the URL the task advertises."""

    hub_scope = "url-task"

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
