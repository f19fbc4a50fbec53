"""The hub-wide queue's options (``c.TaskQueue.hub_*``, quotas, fair share) and the typed settings made of them.

The options stay on the extension's ``TaskQueue`` (their names are the documented ones, mixed in from here);
everything else reads :class:`HubSettings`, made once at start (``HubTenancy.from_options``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from traitlets import Bool, Dict, Float, Int, Unicode, default
from traitlets.config import Configurable

from ..quotas import Quotas

#: The JupyterHub custom scope that lets a user see and manage every user's tasks (``c.JupyterHub.custom_scopes``).
ADMIN_SCOPE = "custom:taskq:admin"
#: Hub admins' tokens carry this scope (JupyterHub's ``admin`` role): they see everyone's tasks too.
HUB_ADMIN_SCOPE = "admin:users"


@dataclass(frozen=True)
class HubSettings:
    """What the hub-wide queue's tenancy needs, typed: no settings dict travels between modules."""

    quotas: Quotas | None = None
    hub_auth: Any = None  # JupyterHub's HubAuth of the service (its api_url and api_token), None outside a hub
    groups_of: dict[str, list[str]] = field(default_factory=dict)  # each user's groups, read from the hub at start
    admin_group: str = ""  # deprecated: TaskQueue.hub_admin_group (grant ADMIN_SCOPE to the group instead)
    admin_scopes: frozenset[str] = frozenset({ADMIN_SCOPE, HUB_ADMIN_SCOPE})


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
        "", config=True, help=f"Deprecated: grant the JupyterHub scope {ADMIN_SCOPE} to the group through a role "
                              "instead (docs/jupyterhub.md). Hub service: members of this JupyterHub group see and "
                              "manage everyone's tasks, as hub admins do.")
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

    @property
    def is_hub_service(self) -> bool:
        return self.hub_mode == "service"

    @property
    def runs_tasks_as_owners(self) -> bool:
        return self.is_hub_service and self.run_as_owner

    def hub_quotas(self) -> Quotas:
        for key, value in self.quota_overrides.items():
            if not key.startswith(("user:", "group:")) or not isinstance(value, dict) or \
                    set(value) - {"max_gpus", "max_queued"}:
                raise ValueError(f"TaskQueue.quota_overrides: {key!r}: keys are 'user:<name>' or 'group:<name>', "
                                 "values {'max_gpus': n, 'max_queued': n}")
        return Quotas(self.max_gpus_per_user, self.max_queued_per_user, dict(self.quota_overrides),
                      self.fair_share_half_life)
