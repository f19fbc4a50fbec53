"""The hub-wide queue's tenancy: owners from JupyterHub's auth, admins by JupyterHub scope, quotas, fair share.

The hub service authenticates every request with JupyterHub (its ``JupyterHubIdentityProvider``): the user
model the hub returns for the token or cookie names the owner and lists the token's scopes and the user's
groups. A user with the custom scope ``custom:taskq:admin`` (granted through a role in the hub's config,
``c.JupyterHub.custom_scopes`` and ``c.JupyterHub.load_roles``), or a hub admin (``admin:users``), sees and
manages everyone's tasks; nothing is looked up or cached beyond what the hub returned for the request.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
import urllib.request

from ..quotas import Quotas, write_policy
from ..serviceerrors import not_found
from ..statedir import open_for_owners
from .options import HubOptions, HubSettings
from .tenancy import ROUTE_SCOPES, Identity, Tenancy

log = logging.getLogger("jupyter_taskq.server")


class HubTenancy(Tenancy):
    """Tasks of many hub users in one queue: each sees their own, admins everyone's."""

    multi_user = True

    def __init__(self, settings: HubSettings, run_as_owner: bool = False):
        self.settings = settings
        self.run_as_owner = run_as_owner

    @classmethod
    def from_options(cls, options: HubOptions, identity_provider) -> HubTenancy:
        """Made by the extension at start, from its ``c.TaskQueue.*`` hub options."""
        auth = getattr(identity_provider, "hub_auth", None)
        quotas = options.hub_quotas()
        if options.hub_admin_group:
            log.warning("jupyter-taskq: TaskQueue.hub_admin_group is deprecated: grant the JupyterHub scope "
                        "custom:taskq:admin to the group %r through a role instead (docs/jupyterhub.md)",
                        options.hub_admin_group)
        groups_of = _read_groups_of(auth) if options.quota_overrides else {}
        return cls(HubSettings(quotas=quotas, hub_auth=auth, groups_of=groups_of,
                               admin_group=options.hub_admin_group), run_as_owner=options.run_as_owner)

    def start(self, state, log) -> None:
        """The fair-share policy file for the workers (worker/fair.py takes turns from it), and the check that
        tasks can run as their owners."""
        quotas = self.settings.quotas or Quotas()  # none set (a HubSettings() of its own): no limits
        write_policy(state.root, quotas, self.settings.groups_of)
        log.info("jupyter-taskq: hub-wide queue; quotas: %d GPUs, %d queued per user (0: none), %d overrides",
                 quotas.max_gpus, quotas.max_queued, len(quotas.overrides))
        if self.run_as_owner:
            _check_can_run_as_owners(state, log)
            log.info("jupyter-taskq: each task runs as its owner's Unix account")
            return
        import getpass

        log.warning("jupyter-taskq: every user's tasks run as this service's account (%s) "
                    "(TaskQueue.run_as_owner=False): share this queue only among users who trust each "
                    "other (docs/jupyterhub.md, security model)", getpass.getuser())

    # -- per request -----------------------------------------------------------------------------
    async def identify(self, user) -> Identity:
        """The hub user behind the request, from the model JupyterHub returned for its token or cookie."""
        model = getattr(user, "hub_user", None) or {}
        owner = model.get("name") or getattr(user, "username", None) or str(user)
        groups = tuple(model.get("groups") or ())
        admin = bool(set(model.get("scopes") or ()) & self.settings.admin_scopes)
        deprecated_group = self.settings.admin_group
        return Identity(owner, sees_all=admin or bool(deprecated_group and deprecated_group in groups),
                        groups=groups)

    def owner_identity(self, owner: str) -> Identity:
        """A task acts as its owner with their own tasks only (an admin's task too)."""
        return Identity(owner, sees_all=False, groups=self.groups_of(owner))

    def admits_route(self, handler_class) -> bool:
        """Only routes whose handler declares its ``hub_scope`` (one of :data:`~.tenancy.ROUTE_SCOPES`)."""
        return getattr(handler_class, "hub_scope", None) in ROUTE_SCOPES

    def guard(self, store, task_id: str, me: Identity) -> None:
        if task_id and not me.sees_all:
            task = store.get(task_id)
            if task is None or task.get("owner") != me.owner:
                raise not_found(task_id)

    # -- quotas ----------------------------------------------------------------------------------
    def admit(self, store, owner: str, groups, adding: int) -> None:
        if self.settings.quotas is not None:
            self.settings.quotas.check_queued(owner, groups, store, adding)

    def quota_uses_groups(self) -> bool:
        return self.settings.quotas is not None and self.settings.quotas.has_group_overrides("max_queued")

    def groups_of(self, owner: str) -> tuple[str, ...]:
        """The hub groups of a task's owner, when someone else (an admin) acts on their task: asked of the hub
        (the service's token needs ``read:users``; blocking), else those read when the service started."""
        auth = self.settings.hub_auth
        groups = list(self.settings.groups_of.get(owner) or [])
        if auth is not None:
            try:
                request = urllib.request.Request(
                    f"{auth.api_url.rstrip('/')}/users/{urllib.parse.quote(owner, safe='')}",
                    headers={"Authorization": f"token {auth.api_token}"})
                with urllib.request.urlopen(request, timeout=10) as answer:
                    groups = list(json.load(answer).get("groups") or [])
            except (OSError, ValueError) as exc:  # (urllib's HTTPError is an OSError)
                log.warning("jupyter-taskq: could not read hub user %s (give the service read:users): %s", owner, exc)
        return tuple(groups)


def _read_groups_of(auth) -> dict:
    """User -> groups, for group quotas in the workers (read once at start from the hub, if allowed)."""
    if auth is None:
        return {}
    try:
        request = urllib.request.Request(f"{auth.api_url.rstrip('/')}/users",
                                         headers={"Authorization": f"token {auth.api_token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return {u["name"]: u.get("groups") or [] for u in json.load(answer)}
    except Exception as exc:  # noqa: BLE001 - group quotas then apply at submission only
        log.warning("jupyter-taskq: could not list hub users for group quotas (give the service "
                    "list:users and read:users): %s", exc)
        return {}


def _check_can_run_as_owners(state, log) -> None:
    """Refuse to start, saying why, where tasks could not run as their owners."""
    problem = None
    if os.geteuid() != 0:
        problem = (f"it runs as uid {os.geteuid()}, not root, so it cannot run each task as its owner's "
                   "account. Run the service as root, or set TaskQueue.run_as_owner=False if every user "
                   "may run code as this account (docs/jupyterhub.md, security model)")
    else:
        try:
            open_for_owners(state)
        except PermissionError as exc:
            problem = str(exc)
    if problem:
        log.critical("jupyter-taskq: not starting the hub service: %s", problem)
        raise SystemExit(f"jupyter-taskq: not starting the hub service: {problem}")
