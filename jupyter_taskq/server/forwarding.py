"""A user's server under JupyterHub whose queue is the hub service: ``HubForwardingApp``, its own extension app.

Loaded instead of the queue's ``TaskQueue`` app (as JupyterHub's ``singleuser`` extension is loaded in a
user's server) when the server runs under JupyterHub with ``$JUPYTER_TASKQ_HUB_SERVICE`` (or
``c.TaskQueue.hub_service``) naming the hub service: :func:`jupyter_taskq.server.entry.extension_app` picks it.
It runs no queue and no workers: it authenticates the browser or kernel as always, then forwards
``taskq/api/*`` to the service with its own ``$JUPYTERHUB_API_TOKEN``, which the hub maps to this user.
Kernels, widgets, the Lab panel and the REST API keep talking to their own server.
"""

from __future__ import annotations

import asyncio
import json
import os
from urllib.parse import urlparse

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.application import ExtensionApp
from tornado import httpclient, web
from traitlets import Unicode, default

from .kernelenv import export_to_kernels
from .widgetjs import handlers as widget_bundle_handlers

FORWARD_TIMEOUT = 330.0  # longer than the longest long-poll (handlers/base.py MAX_WAIT)
REQUEST_HEADERS = ("Content-Type", "Content-Length", "Range", "If-Range", "Accept")
RESPONSE_HEADERS = ("Content-Type", "Content-Disposition", "Content-Range", "Accept-Ranges", "Content-Length",
                    "X-Taskq-Max-Payload-Size")


class HubForwardingApp(ExtensionApp):
    """jupyter-taskq in a user's server under JupyterHub: ``taskq/api`` forwarded to the hub service.

    Its two options are read as ``c.TaskQueue.hub_service`` and ``c.TaskQueue.hub_service_url`` (their documented
    names), or as ``c.HubForwardingApp.*``."""

    name = "jupyter_taskq"

    hub_service = Unicode(config=True, help="The name of the jupyter-taskq hub service (c.TaskQueue.hub_service).")
    hub_service_url = Unicode(config=True, help="Where to reach it (c.TaskQueue.hub_service_url).")

    @default("hub_service")
    def _default_hub_service(self):
        return self.config.TaskQueue.get("hub_service") or os.environ.get("JUPYTER_TASKQ_HUB_SERVICE", "")

    @default("hub_service_url")
    def _default_hub_service_url(self):
        return self.config.TaskQueue.get("hub_service_url") or os.environ.get("JUPYTER_TASKQ_HUB_URL", "")

    def initialize_handlers(self):
        self.handlers.extend(widget_bundle_handlers())  # the notebook widget's code, whatever the mode
        target = self.hub_service_url or ask_hub_for_service(self.hub_service)
        if not target.endswith("/"):
            target += "/"
        self.log.info("jupyter-taskq: forwarding taskq/api to the hub service %r at %s", self.hub_service, target)
        self.handlers.append(("/taskq/api/(?P<path>.*)", ForwardHandler,  # ExtensionApp puts base_url in front
                              {"target": target, "own_base": self.serverapp.base_url.rstrip("/") + "/",
                               "token": os.environ.get("JUPYTERHUB_API_TOKEN", "")}))

    async def _start_jupyter_server_extension(self, serverapp):
        export_to_kernels(serverapp)  # kernels find their own server, which forwards


def ask_hub_for_service(name: str) -> str:
    import urllib.request

    api = os.environ.get("JUPYTERHUB_API_URL", "").rstrip("/")
    if not api:
        raise SystemExit("jupyter-taskq: TaskQueue.hub_service is set, but this server is not under JupyterHub "
                         "($JUPYTERHUB_API_URL is not set); set c.TaskQueue.hub_service_url")
    request = urllib.request.Request(f"{api}/services/{name}",
                                     headers={"Authorization": f"token {os.environ.get('JUPYTERHUB_API_TOKEN')}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            service = json.load(answer)
    except Exception as exc:  # noqa: BLE001
        raise SystemExit(
            f"jupyter-taskq: cannot find the hub service {name!r} at {api} ({exc}); set "
            "$JUPYTER_TASKQ_HUB_URL in c.Spawner.environment (see docs/jupyterhub.md)") from None
    return service["url"].rstrip("/") + service["prefix"]


@web.stream_request_body
class ForwardHandler(APIHandler):
    """``taskq/api/<path>`` of a user's server, forwarded to the hub service as this server's user.

    The user's server authenticates the request (token or cookie + XSRF) exactly as its own API would;
    the service sees this server's JupyterHub token and so this user, whatever the request says.
    Bodies stream both ways (payloads of hundreds of MB never sit in memory); the URLs in JSON answers
    are rewritten from the service's prefix to this server's, so links keep working here."""

    def initialize(self, target: str, own_base: str, token: str):
        self.target = target
        self.own_base = own_base
        self.hub_token = token
        self._body: asyncio.Queue | None = None
        self._fetch = None
        self._done = False

    async def prepare(self):
        await super().prepare()
        if self.current_user is None:
            raise web.HTTPError(403, "authentication required (a Jupyter token or login cookie)")
        action = "read" if self.request.method in ("GET", "HEAD") else "write"
        if not self.authorizer.is_authorized(self, self.current_user, action, "taskq"):
            raise web.HTTPError(403, f"not authorized to {action} taskq")
        self.request.connection.set_max_body_size(1 << 62)  # the service holds bodies to its limits
        self._up_status, self._up_headers, self._json = 502, [], None
        if self.request.method in ("POST", "PUT", "PATCH"):
            self._body = asyncio.Queue(maxsize=16)  # back-pressure: a slow service slows the upload
            self._fetch = asyncio.ensure_future(self._forward(self._produce))

    async def data_received(self, chunk: bytes) -> None:
        # Dropped: after the service answered (a refusal), and a body on a method that sends none (GET, DELETE).
        if not self._done and self._body is not None:
            await self._body.put(chunk)

    async def _produce(self, write) -> None:
        body = self._body
        assert body is not None  # set in prepare, with the fetch that calls this
        while (chunk := await body.get()) is not None:
            await write(chunk)

    def _on_header(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if line.startswith("HTTP/"):
            self._up_status, self._up_headers = int(line.split()[1]), []
        elif line:
            name, _, value = line.partition(":")
            self._up_headers.append((name.strip(), value.strip()))
        elif self._up_status != 100:  # the end of the headers of the real answer
            self.set_status(self._up_status)
            kind = dict((k.lower(), v) for k, v in self._up_headers).get("content-type", "")
            self._json = [] if kind.startswith("application/json") else None
            for name, value in self._up_headers:
                if name in RESPONSE_HEADERS and not (self._json is not None and name == "Content-Length"):
                    self.set_header(name, value)

    def _on_chunk(self, chunk: bytes) -> None:
        if self._json is not None:
            self._json.append(chunk)
        else:
            self.write(chunk)
            asyncio.ensure_future(self.flush())

    async def _forward(self, producer=None):
        path = self.path_kwargs["path"]
        query = f"?{self.request.query}" if self.request.query else ""
        headers = {k: v for k, v in self.request.headers.items() if k in REQUEST_HEADERS}
        headers["Authorization"] = f"token {self.hub_token}"
        client = httpclient.AsyncHTTPClient(force_instance=True, max_body_size=1 << 40)
        try:
            await client.fetch(httpclient.HTTPRequest(
                f"{self.target}taskq/api/{path}{query}", method=self.request.method, headers=headers,
                body_producer=producer, allow_nonstandard_methods=True, follow_redirects=False,
                header_callback=self._on_header, streaming_callback=self._on_chunk,
                connect_timeout=10, request_timeout=FORWARD_TIMEOUT, decompress_response=False), raise_error=False)
        finally:
            client.close()
            self._done = True
            while self._body is not None and not self._body.empty():
                self._body.get_nowait()

    async def _answer(self) -> None:
        if self._fetch is not None:
            assert self._body is not None  # set in prepare, with the fetch
            await self._body.put(None)
            await self._fetch
        else:
            await self._forward()
        if self._up_status == 599:
            raise web.HTTPError(502, "the hub's task queue service did not answer")
        if self._json is not None:
            service_base = urlparse(self.target).path
            body = b"".join(self._json).replace(f'"{service_base}taskq/api/'.encode(),
                                                f'"{self.own_base}taskq/api/'.encode())
            self.write(body)
        self.finish()

    get = post = put = patch = delete = head = lambda self, path: self._answer()  # noqa: E731
