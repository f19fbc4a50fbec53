"""The taskq API's identity provider: Jupyter's own, plus task tokens (:mod:`jupyter_taskq.tasktokens`).

Only the taskq handlers use it (``_TaskqAuth.identity_provider``): a task token opens the task queue's
API as the task's owner and nothing else of Jupyter (contents, kernels, terminals), whose handlers ask
Jupyter's provider, which has never heard of it. Any other credential goes to Jupyter's provider (in
the hub service, JupyterHub's) unchanged.
"""

from __future__ import annotations

import inspect
from typing import Any

from jupyter_server.auth import User
from tornado import web

from .. import tasktokens

SETTING = "taskq_identity_provider"


def provider_for(settings: dict, jupyters) -> TaskTokenIdentity:
    """The provider of this server's taskq handlers, wrapping Jupyter's (made once per server)."""
    provider = settings.get(SETTING)
    if provider is None or provider.inner is not jupyters:
        provider = settings[SETTING] = TaskTokenIdentity(jupyters)
    return provider


def task_token_of(handler) -> str | None:
    """The task token the request authenticates with (``Authorization: token jtqt_...``), if any."""
    scheme, _, value = handler.request.headers.get("Authorization", "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() in ("token", "bearer") and tasktokens.is_task_token(value):
        return value
    return None


def by_task_token(handler) -> bool:
    return getattr(handler, "_taskq_task_token", False)


class TaskTokenIdentity:
    """Jupyter's identity provider with task tokens in front; everything else is Jupyter's."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_user(self, handler):
        token = task_token_of(handler)
        if token is None:
            user = self.inner.get_user(handler)
            return await user if inspect.isawaitable(user) else user
        store = handler.settings["taskq_service"].store
        owner = await handler.blocking(tasktokens.owner_of, store, token)  # store reads: off the event loop
        if owner is None:
            raise web.HTTPError(403, "this task token is not valid: the task attempt it was made for has ended")
        # In the hub service the task acts as its owner with their own tasks only (an admin's task too);
        # in a user's own server its owner is the server's user, who sees everything there (hub/tenancy.py).
        handler._taskq_identity = await handler.blocking(handler.tenancy.owner_identity, owner)
        handler._taskq_task_token = True
        return User(username=owner, name=owner)

    def is_token_authenticated(self, handler) -> bool:
        """A task token is a header, never a cookie: no XSRF check, as for Jupyter's own tokens."""
        return by_task_token(handler) or self.inner.is_token_authenticated(handler)

    def should_check_origin(self, handler) -> bool:
        return not by_task_token(handler) and self.inner.should_check_origin(handler)
