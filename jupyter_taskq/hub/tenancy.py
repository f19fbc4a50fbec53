"""The tenancy seam: who a request is, which tasks they may see, and what they may add.

The REST handlers call only this interface (``handler.tenancy``); they never ask whether the server runs
under JupyterHub. Per request, after jupyter_server has authenticated it:

* :meth:`Tenancy.identify` -> :class:`Identity` (owner, whether they see everyone's, their groups), from the
  user jupyter_server authenticated (a task token's identity comes from :meth:`Tenancy.owner_identity`);
* :meth:`Tenancy.admits_route`: a route not declared for tenants (its handler's ``hub_scope``) is refused;
* :meth:`Tenancy.guard`: a task named in the URL that is not theirs answers 404, before the handler runs;
* :meth:`Tenancy.scope` -> the service as that identity sees it (:class:`.owners.OwnerView`, fail-closed);
* :meth:`Tenancy.admit`: the queued-tasks quota, when a submission or retry adds waiting tasks.

Turns between users (fair share) are taken by the workers (``worker/fair.py``) from the policy file that
:meth:`Tenancy.start` writes (:func:`jupyter_taskq.quotas.write_policy`): the server never picks the next task.

:class:`SingleUserTenancy` is a personal server's: everything is its user's, nothing is filtered. The hub-wide
queue's is :class:`.hubtenancy.HubTenancy`.
"""

from __future__ import annotations

import os
import pwd

from .identity import Identity
from .owners import OwnerView

#: A route's ``hub_scope`` (the class attribute of its handler), declared for every route open to hub users:
ROUTE_SCOPES = {
    "own": "reaches only the tenancy's view of the service: each call scoped to the asking user",
    "url-task": "acts on the task whose id the URL names (task_id), which guard() answered 404 for if not theirs",
}


def server_owner() -> str:
    """Whose a single-user server's tasks are: its JupyterHub user, else its Unix account. Not the request's
    ``current_user``: jupyter_server makes up a new random name for every token-authenticated request."""
    if os.environ.get("JUPYTERHUB_USER"):
        return os.environ["JUPYTERHUB_USER"]
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


class Tenancy:
    """The interface, implemented for a personal server: one user, who owns and sees everything."""

    #: Whether tasks belong to several users here (the hub-wide queue): the view filters by owner.
    multi_user = False

    def start(self, state, log) -> None:
        """Once, when the queue starts (``state``: its :class:`~jupyter_taskq.statedir.StateDir`)."""

    async def identify(self, user) -> Identity:
        """Who the authenticated ``user`` (jupyter_server's, or JupyterHub's in the hub service) is here."""
        return Identity(server_owner(), sees_all=True)

    def owner_identity(self, owner: str) -> Identity:
        """The identity a running task acts with (its task token names its owner). Blocking: thread pool."""
        return Identity(owner, sees_all=True)  # a personal server's user sees everything there

    def admits_route(self, handler_class) -> bool:
        """Whether this tenancy's users may use a route (every route is open to a personal server's user)."""
        return True

    def guard(self, store, task_id: str, me: Identity) -> None:
        """Raise a 404 if ``task_id`` (named in the URL) is someone else's. Blocking: thread pool."""

    def scope(self, service, me: Identity):
        """The service as ``me`` sees it (fails closed: see :class:`.owners.OwnerView`)."""
        return OwnerView(service, me, self)

    def admit(self, store, owner: str, groups, adding: int) -> None:
        """Raise :class:`~jupyter_taskq.quotas.QuotaExceeded` if ``owner`` may not have ``adding`` more waiting."""

    def groups_of(self, owner: str) -> tuple[str, ...]:
        """A task owner's groups, when someone else (an admin) acts on their task. Blocking: thread pool."""
        return ()

    def quota_uses_groups(self) -> bool:
        return False


class SingleUserTenancy(Tenancy):
    """A personal server's tenancy: the no-op implementation of every method."""
