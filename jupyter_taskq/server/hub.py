"""One queue for a whole JupyterHub (issue 15): the hub service, and users' servers forwarding to it.

Two roles, one extension:

* **The hub service** (``jupyter taskq hub-service``, run by JupyterHub as a managed service)
  is a Jupyter server with this extension that owns the machine's workers. It authenticates
  every request with JupyterHub's own service auth (``jupyterhub.services.auth.HubOAuth``,
  through JupyterHub's ``JupyterHubIdentityProvider``): a token or OAuth cookie is checked
  with the hub, which says whose it is and whether it may use this service
  (``access:services!service=<name>``). The task owner is that hub user, never a name a client
  sends (:mod:`.owners`), and quotas and fair share apply (:mod:`jupyter_taskq.quotas`,
  :mod:`jupyter_taskq.fairshare`).
* **A user's server** with ``c.TaskQueue.hub_service = "taskq"`` (or ``$JUPYTER_TASKQ_HUB_SERVICE``)
  runs no queue and no workers: it authenticates the browser or kernel as always, then forwards
  ``taskq/api/*`` to the service with its own ``$JUPYTERHUB_API_TOKEN``, which the hub maps to
  this user. Kernels, widgets, the Lab panel and the REST API keep talking to their own server.

See docs/jupyterhub.md for the hub's configuration.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from urllib.parse import urlparse

from jupyter_server.base.handlers import APIHandler
from tornado import httpclient, web
from traitlets import Bool, Dict, Float, Int, Unicode, default
from traitlets.config import Configurable

from ..quotas import Quotas, write_policy
from ..statedir import open_for_owners

FORWARD_TIMEOUT = 330.0  # longer than the longest long-poll (handlers.MAX_WAIT)
REQUEST_HEADERS = ("Content-Type", "Content-Length", "Range", "If-Range", "Accept")
RESPONSE_HEADERS = ("Content-Type", "Content-Disposition", "Content-Range", "Accept-Ranges", "Content-Length",
                    "X-Taskq-Max-Payload-Size")


class HubOptions(Configurable):
    """The ``c.TaskQueue.*`` options of a hub-wide queue (mixed into the extension's TaskQueue)."""

    hub_service = Unicode(
        config=True,
        help="In a user's server under JupyterHub: the name of the jupyter-taskq hub service to use instead of a "
             "queue of this server's own (default: $JUPYTER_TASKQ_HUB_SERVICE). Empty: a queue of its own.",
    )
    hub_service_url = Unicode(
        config=True,
        help="Where this server reaches the hub service, e.g. http://127.0.0.1:10101/services/taskq/ (default: "
             "$JUPYTER_TASKQ_HUB_URL, else asked of the hub's API, which needs read:services in the server token).",
    )
    hub_mode = Unicode(
        "", config=True,
        help="Set by `jupyter taskq hub-service`: 'service' makes this server the hub-wide queue (tasks owned by "
             "hub users, each seeing only their own).",
    )
    hub_admin_group = Unicode(
        "", config=True, help="Hub service: members of this JupyterHub group see and manage everyone's tasks, "
                              "as hub admins do.")
    max_gpus_per_user = Int(0, config=True, help="Hub service: GPUs one user's tasks may hold at once (0: no limit); "
                                                 "tasks over it wait.")
    max_queued_per_user = Int(0, config=True, help="Hub service: tasks one user may have waiting (0: no limit); "
                                                   "a submission over it is refused with 429.")
    quota_overrides = Dict(
        config=True, help='Hub service: per-user and per-group quotas, e.g. {"user:ada": {"max_gpus": 4}, '
                          '"group:students": {"max_queued": 50}}.')
    run_as_owner = Bool(
        True, config=True,
        help="Hub service: run each task as its owner's Unix account (uid, gids, home), as where the hub's users "
             "are accounts on this machine (LocalProcessSpawner, SystemdSpawner). Needs the service to run as "
             "root; without root it refuses to start. False: every task runs as the service's account (only "
             "for users who trust each other, e.g. users that are not accounts here).")
    fair_share_half_life = Float(3600.0, config=True,
                                 help="Hub service: seconds after which a user's GPU time counts half in fair share.")

    @default("hub_service")
    def _default_hub_service(self):
        return os.environ.get("JUPYTER_TASKQ_HUB_SERVICE", "")

    @default("hub_service_url")
    def _default_hub_service_url(self):
        return os.environ.get("JUPYTER_TASKQ_HUB_URL", "")

    # -- the hub service --------------------------------------------------
    def hub_quotas(self) -> Quotas:
        for key, value in self.quota_overrides.items():
            if not key.startswith(("user:", "group:")) or not isinstance(value, dict) or \
                    set(value) - {"max_gpus", "max_queued"}:
                raise ValueError(f"TaskQueue.quota_overrides: {key!r}: keys are 'user:<name>' or 'group:<name>', "
                                 "values {'max_gpus': n, 'max_queued': n}")
        return Quotas(self.max_gpus_per_user, self.max_queued_per_user, dict(self.quota_overrides),
                      self.fair_share_half_life)

    def setup_hub_service(self) -> None:
        """Hub service only: scoping for the handlers, and the fair-share policy file for the workers."""
        if self.hub_mode != "service":
            return
        provider = self.serverapp.identity_provider
        quotas = self.hub_quotas()
        groups_of = self._groups_of(provider)
        # groups_of: each user's groups at start, for an admin's retry of a task of a user the hub cannot
        # be asked about now (owners.owner_groups asks the hub first)
        self.settings["taskq_hub"] = {"admin_group": self.hub_admin_group, "quotas": quotas,
                                      "hub_auth": getattr(provider, "hub_auth", None), "groups_of": groups_of}
        write_policy(self.state.root, quotas, groups_of)
        self.log.info("jupyter-taskq: hub-wide queue; quotas: %d GPUs, %d queued per user (0: none), %d overrides",
                      quotas.max_gpus, quotas.max_queued, len(quotas.overrides))
        if self.run_as_owner:
            self._check_can_run_as_owners()
            self.log.info("jupyter-taskq: each task runs as its owner's Unix account")
            return
        import getpass

        self.log.warning("jupyter-taskq: every user's tasks run as this service's account (%s) "
                         "(TaskQueue.run_as_owner=False): share this queue only among users who trust each "
                         "other (docs/jupyterhub.md, security model)", getpass.getuser())

    @property
    def runs_tasks_as_owners(self) -> bool:
        return self.hub_mode == "service" and self.run_as_owner

    def _check_can_run_as_owners(self) -> None:
        """Refuse to start, saying why, where tasks could not run as their owners."""
        problem = None
        if os.geteuid() != 0:
            problem = (f"it runs as uid {os.geteuid()}, not root, so it cannot run each task as its owner's "
                       "account. Run the service as root, or set TaskQueue.run_as_owner=False if every user "
                       "may run code as this account (docs/jupyterhub.md, security model)")
        else:
            try:
                open_for_owners(self.state)
            except PermissionError as exc:
                problem = str(exc)
        if problem:
            self.log.critical("jupyter-taskq: not starting the hub service: %s", problem)
            raise SystemExit(f"jupyter-taskq: not starting the hub service: {problem}")

    def _groups_of(self, provider) -> dict:
        """User -> groups, for group quotas in the workers (read once at start from the hub, if allowed)."""
        auth = getattr(provider, "hub_auth", None)
        if auth is None or not self.quota_overrides:
            return {}
        import urllib.request

        try:
            request = urllib.request.Request(f"{auth.api_url.rstrip('/')}/users",
                                             headers={"Authorization": f"token {auth.api_token}"})
            with urllib.request.urlopen(request, timeout=10) as answer:
                return {u["name"]: u.get("groups") or [] for u in json.load(answer)}
        except Exception as exc:  # noqa: BLE001 - group quotas then apply at submission only
            self.log.warning("jupyter-taskq: could not list hub users for group quotas (give the service "
                             "list:users and read:users): %s", exc)
            return {}

    # -- a user's server that forwards ------------------------------------
    @property
    def forwards_to_hub(self) -> bool:
        return bool(self.hub_service) and self.hub_mode != "service"

    def forwarding_handlers(self, base_url: str) -> list[tuple]:
        target = self.hub_service_url or self._ask_hub_for_service()
        if not target.endswith("/"):
            target += "/"
        self.log.info("jupyter-taskq: forwarding taskq/api to the hub service %r at %s", self.hub_service, target)
        return [("/taskq/api/(?P<path>.*)", ForwardHandler,  # ExtensionApp puts base_url in front
                 {"target": target, "own_base": base_url.rstrip("/") + "/",
                  "token": os.environ.get("JUPYTERHUB_API_TOKEN", "")})]

    def _ask_hub_for_service(self) -> str:
        import urllib.request

        api = os.environ.get("JUPYTERHUB_API_URL", "").rstrip("/")
        if not api:
            raise SystemExit("jupyter-taskq: TaskQueue.hub_service is set, but this server is not under JupyterHub "
                             "($JUPYTERHUB_API_URL is not set); set c.TaskQueue.hub_service_url")
        request = urllib.request.Request(f"{api}/services/{self.hub_service}",
                                         headers={"Authorization": f"token {os.environ.get('JUPYTERHUB_API_TOKEN')}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                service = json.load(answer)
        except Exception as exc:  # noqa: BLE001
            raise SystemExit(
                f"jupyter-taskq: cannot find the hub service {self.hub_service!r} at {api} ({exc}); set "
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
        if self.request.method in ("POST", "PUT"):
            self._body = asyncio.Queue(maxsize=16)  # back-pressure: a slow service slows the upload
            self._fetch = asyncio.ensure_future(self._forward(self._produce))

    async def data_received(self, chunk: bytes) -> None:
        if not self._done:  # the service answered already (a refusal): the rest of the body is dropped
            await self._body.put(chunk)

    async def _produce(self, write) -> None:
        while (chunk := await self._body.get()) is not None:
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

    get = post = put = delete = head = lambda self, path: self._answer()  # noqa: E731


def main(argv: list[str] | None = None) -> int:
    """``jupyter taskq hub-service [--TaskQueue.option=value ...]``: the hub-wide queue, as JupyterHub runs it.

    Listens where JupyterHub says (``$JUPYTERHUB_SERVICE_URL``, under ``$JUPYTERHUB_SERVICE_PREFIX``),
    authenticates with the hub, and starts the machine's workers. Refuses to start outside JupyterHub."""
    argv = list(sys.argv[1:] if argv is None else argv)
    url, prefix = os.environ.get("JUPYTERHUB_SERVICE_URL"), os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if not (url and prefix and os.environ.get("JUPYTERHUB_API_TOKEN")):
        print("jupyter taskq hub-service: not started by JupyterHub ($JUPYTERHUB_SERVICE_URL, "
              "$JUPYTERHUB_SERVICE_PREFIX and $JUPYTERHUB_API_TOKEN are unset): run it as a managed service, "
              "see docs/jupyterhub.md", file=sys.stderr)
        return 2
    where = urlparse(url)
    from jupyter_server.serverapp import ServerApp

    ServerApp.launch_instance(argv=[
        f"--ServerApp.ip={where.hostname}", f"--ServerApp.port={where.port or 80}", f"--ServerApp.base_url={prefix}",
        "--ServerApp.open_browser=False", "--ServerApp.port_retries=0",
        "--ServerApp.identity_provider_class=jupyterhub.singleuser.extension.JupyterHubIdentityProvider",
        "--TaskQueue.hub_mode=service", *argv])
    return 0


if __name__ == "__main__":
    sys.exit(main())
