"""REST handlers under ``{base_url}taskq/api/``: thin HTTP over :class:`TaskService`.

Every handler goes through jupyter_server's identity provider (token, or cookie
plus XSRF) and authorizer (resource ``taskq``). Submission streams the payload to
a private spool file as it arrives, after authentication and before the body is
read, so hundreds of MB never sit in the server's memory.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import os
from pathlib import Path
from urllib.parse import quote, unquote

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from tornado import web

from ..status import FINAL
from .offloop import OffLoop, make_executor, run
from .service import ServiceError, bad_request

AUTH_RESOURCE = "taskq"
MAX_WAIT = 300.0
MAX_JSON_BODY = 64 * 1024 * 1024
CHUNK = 1024 * 1024
_METHOD_ACTION = {"GET": "read", "HEAD": "read", "POST": "write", "DELETE": "write"}


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
        return OffLoop(self.settings["taskq_service"], self.executor)

    async def blocking(self, fn, *args, **kwargs):
        """Run a blocking function (parsing a large body, a file copy) on the service's thread pool."""
        return await run(self.executor, fn, *args, **kwargs)

    async def prepare(self):
        await super().prepare()
        # Refuse before any body is read or stored: streamed uploads come before the method runs.
        if self.current_user is None:
            raise web.HTTPError(403, "authentication required (a Jupyter token or login cookie)")
        action = _METHOD_ACTION.get(self.request.method, "write")
        if not self.authorizer.is_authorized(self, self.current_user, action, AUTH_RESOURCE):
            raise web.HTTPError(403, f"not authorized to {action} {AUTH_RESOURCE}")

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, ServiceError) and not self._finished:
            self.clear()
            self.set_status(e.status)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": str(e), "reason": e.reason}))
            return
        super()._handle_request_exception(e)


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
        """Wait until every task has finished; each check looks only at those still unfinished."""
        unfinished = set(task_ids)

        async def done() -> bool:
            unfinished.difference_update(await self.service.finished(list(unfinished)))
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


@web.stream_request_body
class TasksHandler(TaskqHandler):
    """GET: the task list. POST: submit one task (raw payload body, options in the query; or JSON)."""

    async def prepare(self):
        await super().prepare()
        self._spool = self._spool_fd = None
        self._json_chunks: list[bytes] | None = None
        if self.request.method != "POST":
            return
        kind = self.request.headers.get("Content-Type", "").split(";")[0].strip()
        self.request.connection.set_max_body_size(self.settings["taskq_max_payload"])
        if kind == "application/json":
            self._json_chunks, self._json_size = [], 0
        elif kind in ("application/octet-stream", "application/x-jupyter-taskq-payload"):
            self._spool, self._spool_fd = self.settings["taskq_service"].open_spool()
        else:
            raise web.HTTPError(415, "submit a payload as application/octet-stream (options in the query string) "
                                     "or as application/json with a base64 'payload'")

    def data_received(self, chunk: bytes) -> None:
        if self._spool_fd is not None:
            os.write(self._spool_fd, chunk)
        elif self._json_chunks is not None:
            self._json_size += len(chunk)
            if self._json_size > MAX_JSON_BODY:
                raise web.HTTPError(413, "JSON submissions are limited to 64 MiB; send large payloads as "
                                         "application/octet-stream")
            self._json_chunks.append(chunk)

    def on_finish(self) -> None:
        self._discard_spool()

    def on_connection_close(self) -> None:
        self._discard_spool()
        super().on_connection_close()

    def _discard_spool(self) -> None:
        if self._spool_fd is not None:
            os.close(self._spool_fd)
            self._spool_fd = None
        if self._spool is not None and self._spool.exists():
            self._spool.unlink()

    @authorized
    async def get(self):
        statuses = [s for s in self.get_query_argument("status", "").upper().split(",") if s]
        try:
            limit = int(self.get_query_argument("limit", "50"))
            offset = int(self.get_query_argument("offset", "0"))
        except ValueError:
            raise bad_request("'limit' and 'offset' must be integers") from None
        text = self.get_query_argument("q", "").strip()
        self.finish(json.dumps(await self.service.list(statuses, limit, offset, text=text)))

    @authorized
    async def post(self):
        if self._json_chunks is not None:
            self.request.body = b"".join(self._json_chunks)
            body = self.json_body()
            spooled = await self.service.spool_bytes(_decode_payload(body.pop("payload", None)))
            raw_options = body
        else:
            os.close(self._spool_fd)
            self._spool_fd = None
            spooled, self._spool = self._spool, None
            raw_options = {k: self.get_query_argument(k) for k in self.request.query_arguments}
        try:
            options = await self.service.validate_options(raw_options)
        except ServiceError:
            spooled.unlink(missing_ok=True)
            raise
        task = await self.service.submit(spooled, options)
        self.set_status(201)
        self.finish(json.dumps(task))


def _decode_payload(value) -> bytes:
    if not isinstance(value, str):
        raise bad_request("'payload' (the base64 of a jupyter-taskq payload) is required")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("'payload' is not valid base64") from None


class BatchHandler(TaskqHandler):
    """POST ``{"tasks": [{"payload": base64, ...options}, ...]}``: many small tasks in one request."""

    @authorized
    async def post(self):
        created = await self.blocking(self._submit_batch)  # parsing 20,000 tasks takes a while: not on the loop
        self.set_status(201)
        self.finish(json.dumps({"tasks": created}))

    def _submit_batch(self) -> list[dict]:
        service = self.settings["taskq_service"]
        items = self.json_body().get("tasks")
        if not isinstance(items, list) or not items:
            raise bad_request("'tasks' must be a non-empty list of {payload, ...options} objects")
        prepared = []
        for index, item in enumerate(items):  # validate all before queuing any
            if not isinstance(item, dict):
                raise bad_request(f"tasks[{index}] must be an object")
            item = dict(item)
            try:
                data = _decode_payload(item.pop("payload", None))
                options = service.validate_options(item)
            except ServiceError as exc:
                raise bad_request(f"tasks[{index}]: {exc}") from None
            prepared.append((data, options))
        return service.submit_many(prepared)


class CancelHandler(TaskqHandler):
    @authorized
    async def post(self):
        body = self.json_body()
        if "task_ids" not in body:
            raise bad_request('body must be {"task_ids": [...]}')
        self.finish(json.dumps(await self.service.cancel(body["task_ids"])))


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
        self.finish(json.dumps({"done": done, "tasks": await self.service.tasks_by_id(ids)}))


class TaskHandler(TaskqHandler):
    @authorized
    async def get(self, task_id):
        wait = self.wait_seconds()
        task = await self.service.get(task_id)
        if wait and task["status"] not in FINAL:
            await self.wait_final([task_id], wait)
            task = await self.service.get(task_id)
        self.finish(json.dumps(task))

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
        self.finish(json.dumps(task))


class ResultHandler(TaskqHandler):
    """The dill bytes of the return value; 409 until COMPLETE. ``?wait=s`` waits for the end first, and a
    task still unfinished after the wait answers 202 (expected in a long-poll: no warning in the log)."""

    @authorized
    async def get(self, task_id):
        wait = self.wait_seconds()
        await self.service.get_task(task_id)  # 404 before waiting
        if wait and not await self.wait_final([task_id], wait):
            task = await self.service.get_task(task_id)
            if task["status"] not in FINAL:
                self.set_status(202)
                self.finish(json.dumps({"status": task["status"],
                                        "message": f"task {task_id} is still {task['status']}; ask again"}))
                return
        await self.send_file(await self.service.result_path(task_id), f"{task_id}.result")


class ExceptionHandler(TaskqHandler):
    """The dill bytes of the exception a FAILED task raised, when it could be pickled."""

    @authorized
    async def get(self, task_id):
        await self.send_file(await self.service.error_pickle_path(task_id), f"{task_id}.exception")


class LogsHandler(TaskqHandler):
    """``?offset=N``: the log from byte N, also while the task runs; pass back ``next_offset`` to follow."""

    @authorized
    async def get(self, task_id):
        raw = self.get_query_argument("offset", "0")
        try:
            offset = int(raw)
        except ValueError:
            raise bad_request(f"'offset' must be an integer, got {raw!r}") from None
        self.finish(json.dumps(await self.service.log_chunk(task_id, offset)))


class OutputHandler(_TaskqAuth, JupyterHandler, web.StaticFileHandler):
    """Downloads a registered output file, with ranges, the right type and an attachment name."""

    @authorized
    async def get(self, task_id, name, include_body=True):
        path = await self.service.output_path(task_id, unquote(name))
        self.root = str(path.parent)
        self.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(path.name)}")
        await web.StaticFileHandler.get(self, path.name, include_body)

    @authorized
    async def head(self, task_id, name):
        await self.get(task_id, name, include_body=False)

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
        self.finish(json.dumps(await self.changes.changes(since, wait, self.service.fingerprint)))


class StatsHandler(TaskqHandler):
    @authorized
    async def get(self):
        self.finish(json.dumps(await self.service.stats()))


def handlers(base_url: str) -> list[tuple]:
    from .groups import handlers as group_handlers  # groups.py builds on this module's handlers

    api = base_url.rstrip("/") + "/taskq/api"
    task = r"(?P<task_id>[^/]+)"
    return [
        (f"{api}/tasks", TasksHandler),
        (f"{api}/tasks/batch", BatchHandler),
        (f"{api}/tasks/cancel", CancelHandler),
        (f"{api}/tasks/wait", WaitHandler),
        (f"{api}/tasks/{task}", TaskHandler),
        (f"{api}/tasks/{task}/retry", RetryHandler),
        (f"{api}/tasks/{task}/result", ResultHandler),
        (f"{api}/tasks/{task}/exception", ExceptionHandler),
        (f"{api}/tasks/{task}/logs", LogsHandler),
        (f"{api}/tasks/{task}/outputs/(?P<name>[^/]+)", OutputHandler, {"path": "/nonexistent"}),
        (f"{api}/stats", StatsHandler),
        (f"{api}/changes", ChangesHandler),
        *group_handlers(api),
    ]
