"""Who a request is, and which tasks it may see: every task has an owner (issue 15).

In the hub service the owner is the JupyterHub user behind the request's token or cookie, checked
with the hub; in a user's own server it is that server's user (``$JUPYTERHUB_USER``, else its Unix
account), and nothing is filtered. Never a name the client sends: ``owner`` is not a task option,
so a submission cannot set it.

In the hub service (``settings["taskq_hub"]``) a user sees only their own tasks: a request naming
someone else's task answers 404, exactly as an id that does not exist, so ids cannot be probed.
Hub admins and members of ``TaskQueue.hub_admin_group`` see, cancel and delete everyone's.

Handlers reach the service through :class:`OwnerView`, which sets the owner on new tasks,
filters listings and bulk calls, and applies the queued-tasks quota (:mod:`jupyter_taskq.quotas`).
It fails closed: a service method it neither scopes nor declares safe (:attr:`OwnerView.PASS_THROUGH`)
is not reachable through it, so a new ``TaskService`` method is never open to every hub user unscoped.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from ..status import FINAL, TaskStatus
from .service import ServiceError, lost, not_found

ADMIN_CACHE_SECONDS = 60.0  # how long a user's admin flag and groups, asked of the hub, are reused
log = logging.getLogger("jupyter_taskq.server")


@dataclass(frozen=True)
class Identity:
    owner: str
    sees_all: bool  # an admin (or a single-user server's own user): every owner's tasks
    groups: tuple[str, ...] = ()


def hub_settings(handler) -> dict | None:
    """The hub service's settings (``None`` in a user's own server: no scoping)."""
    return handler.settings.get("taskq_hub")


async def identify(handler) -> Identity:
    """The request's identity, worked out once per request (after authentication)."""
    found = getattr(handler, "_taskq_identity", None)
    if found is not None:
        return found
    user = handler.current_user
    owner = getattr(user, "username", None) or str(user)
    hub = hub_settings(handler)
    if hub is None:
        found = Identity(server_owner(), sees_all=True)
    else:
        admin, groups = await _hub_roles(handler, hub, user)
        found = Identity(owner, sees_all=admin or bool(hub["admin_group"] and hub["admin_group"] in groups),
                         groups=tuple(groups))
    handler._taskq_identity = found
    return found


async def _hub_roles(handler, hub: dict, user) -> tuple[bool, list[str]]:
    """``(admin, groups)`` of a hub user: from the model the hub returned for their token when it says,
    else asked of the hub with the service's own token (``read:users``), cached a minute."""
    model = getattr(user, "hub_user", None) or {}
    if "admin" in model and "groups" in model:
        return bool(model["admin"]), list(model["groups"])
    name = model.get("name") or user.username
    roles = _cached_roles(hub, name)
    if roles is not None:
        return roles
    auth = hub.get("hub_auth")
    admin, groups = bool(model.get("admin")), list(model.get("groups") or [])
    if auth is not None:
        try:
            response = await AsyncHTTPClient().fetch(
                _user_url(auth, name), headers={"Authorization": f"token {auth.api_token}"}, request_timeout=10)
            full = json.loads(response.body)
            admin, groups = bool(full.get("admin")), list(full.get("groups") or groups)
        except (HTTPClientError, OSError, ValueError) as exc:
            handler.log.warning("jupyter-taskq: could not read hub user %s (give the service read:users): %s",
                                name, exc)
    return _cache_roles(hub, name, admin, groups)


def _user_url(auth, name: str) -> str:
    return f"{auth.api_url.rstrip('/')}/users/{urllib.parse.quote(name, safe='')}"


def _cached_roles(hub: dict, name: str) -> tuple[bool, list[str]] | None:
    at, roles = hub.setdefault("_roles", {}).get(name, (0.0, None))
    return roles if roles is not None and time.monotonic() - at < ADMIN_CACHE_SECONDS else None


def _cache_roles(hub: dict, name: str, admin: bool, groups: list[str]) -> tuple[bool, list[str]]:
    hub.setdefault("_roles", {})[name] = (time.monotonic(), (admin, groups))
    return admin, groups


def owner_groups(hub: dict, owner: str) -> tuple[str, ...]:
    """The hub groups of a task's owner, when someone else (an admin) acts on their task: from the cache
    that requests fill, else asked of the hub (``read:users``; blocking: called on the thread pool, as
    every :class:`OwnerView` call is), else those read when the service started (``groups_of``)."""
    roles = _cached_roles(hub, owner)
    if roles is not None:
        return tuple(roles[1])
    auth = hub.get("hub_auth")
    admin, groups = False, list((hub.get("groups_of") or {}).get(owner) or [])
    if auth is not None:
        try:
            request = urllib.request.Request(_user_url(auth, owner),
                                             headers={"Authorization": f"token {auth.api_token}"})
            with urllib.request.urlopen(request, timeout=10) as answer:
                full = json.load(answer)
            admin, groups = bool(full.get("admin")), list(full.get("groups") or [])
        except (OSError, ValueError) as exc:  # (urllib's HTTPError is an OSError)
            log.warning("jupyter-taskq: could not read hub user %s (give the service read:users): %s", owner, exc)
            # Not cached: the cache also holds the owner's admin flag for their own requests, and a guess
            # made while the hub did not answer must not take an admin's rights away for a minute.
            return tuple(groups)
    return tuple(_cache_roles(hub, owner, admin, groups)[1])


async def guard(handler) -> None:
    """404 for a task of someone else's named in the URL, before the handler (or its upload) runs."""
    if hub_settings(handler) is None:
        return
    me = await identify(handler)
    task_id = handler.path_kwargs.get("task_id")
    if task_id and not me.sees_all:
        service = handler.settings["taskq_service"]
        task = await handler.blocking(service.store.get, task_id)
        if task is None or task.get("owner") != me.owner:
            raise not_found(task_id)


def server_owner() -> str:
    """Whose a single-user server's tasks are: its JupyterHub user, else its Unix account. Not the request's
    ``current_user``: jupyter_server makes up a new random name for every token-authenticated request."""
    if os.environ.get("JUPYTERHUB_USER"):
        return os.environ["JUPYTERHUB_USER"]
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def view(handler) -> "OwnerView":
    me = getattr(handler, "_taskq_identity", None)
    if me is None:  # not worked out yet (a single-user server): its user sees everything
        if hub_settings(handler) is not None:
            raise RuntimeError("jupyter-taskq: the hub service's handlers must identify the user first (guard)")
        me = Identity(server_owner(), sees_all=True)
    return OwnerView(handler.settings["taskq_service"], me, hub_settings(handler))


class NotScoped(AttributeError):
    """A service attribute that :class:`OwnerView` neither scopes nor declares safe for every user."""


class OwnerView:
    """The service as one user sees it. Fails closed: only the methods defined here (scoped to the user)
    and those in :attr:`PASS_THROUGH` are reachable; any other attribute raises :class:`NotScoped`."""

    #: Service methods every user may call as they are. Each acts on the one task whose id the URL names,
    #: which :func:`guard` answered 404 for before the handler ran if it is someone else's; or touches
    #: nothing of anyone's (a fresh spool file, the change feed's fingerprint, which only says "something
    #: changed"). Declare a new method here only if that holds for it; otherwise scope it below.
    PASS_THROUGH = frozenset({
        "get", "delete", "result_path", "error_pickle_path", "log_chunk", "open_output",  # the URL's task
        "open_spool", "spool_bytes", "fingerprint",  # nobody's
    })

    def __init__(self, service, me: Identity, hub: dict | None):
        self._service = service
        self.me = me
        self.hub = hub

    def __getattr__(self, name: str) -> Any:
        if name in self.PASS_THROUGH:
            return getattr(self._service, name)
        raise NotScoped(f"jupyter-taskq: TaskService.{name} is not reachable through OwnerView: scope it to the "
                        "asking user there, or declare it in OwnerView.PASS_THROUGH if it is safe for every user")

    @property
    def store(self):
        """The store, its ``statuses`` limited to this user's tasks (a task group's counts, :mod:`.groups`)."""
        return self._service.store if self.me.sees_all else _OwnStore(self._service.store, self.me.owner)

    def visible_ids(self, ids: list[str]) -> list[str]:
        """Those of ``ids`` this user may know of (the change feed names every task that changed)."""
        if self.me.sees_all or self.hub is None:
            return ids
        return [i for i in ids if i in self.store.statuses(ids)]

    def _visible(self, task: dict | None) -> bool:
        return task is not None and (self.me.sees_all or task.get("owner") == self.me.owner)

    # -- submission: the owner is who is asking; the queued-tasks quota holds -----------------------
    def validate_options(self, raw) -> dict:
        options = dict(self._service.validate_options(raw), owner=self.me.owner)
        after = (options.get("conditions") or {}).get("after") or []
        if after and not self.me.sees_all:  # someone else's task reads as unknown, as everywhere (fails closed)
            mine = self.store.statuses(after)
            unknown = [d for d in after if d not in mine]
            if unknown:
                raise ServiceError(400, f"'after' names {unknown[0]!r}, which is not a task of this queue")
        return options

    def submit(self, spooled, options: dict, retry_of: str | None = None) -> dict:
        self._check_queued(1, spooled=[spooled])
        return self._service.submit(spooled, options, retry_of=retry_of)

    def submit_many(self, items, retry_of=None, numbered=True) -> list[dict]:
        self._check_queued(len(items), spooled=[s for s, _o in items])
        return self._service.submit_many(items, retry_of=retry_of, numbered=numbered)

    def _check_queued(self, adding: int, spooled, owner: str | None = None) -> None:
        """The queued-tasks quota of ``owner`` (default: who asks), with that owner's groups."""
        if self.hub is None or self.hub.get("quotas") is None:
            return
        from ..quotas import QuotaExceeded

        quotas, owner = self.hub["quotas"], self.me.owner if owner is None else owner
        groups = self.me.groups if owner == self.me.owner else \
            owner_groups(self.hub, owner) if quotas.has_group_overrides("max_queued") else ()
        try:
            quotas.check_queued(owner, groups, self._service.store, adding)
        except QuotaExceeded as exc:
            for path in spooled:
                path.unlink(missing_ok=True)
            raise ServiceError(429, str(exc), "quota exceeded") from None

    def retry(self, task_id: str) -> dict:
        """A retry is a new waiting task of the task's owner (whoever asks: an admin may retry anyone's),
        so it counts against the owner's queued-tasks quota, with the owner's groups."""
        task = self.get_task(task_id)
        owner = task.get("owner")
        self._check_queued(1, spooled=[], owner=self.me.owner if owner is None else owner)
        return self._service.retry(task["id"])

    # -- reading: only what this user may see ------------------------------------------------------
    def get_task(self, task_id: str) -> dict:
        task = self._service.get_task(task_id)
        if not self._visible(task):
            raise not_found(task_id)
        return task

    def list(self, statuses=None, limit=50, offset=0, text=None, owner=None, notebooks=None) -> dict:
        """``owner``: one user's tasks (an admin's choice); a user who sees only their own gets those whatever
        they ask for."""
        if owner is not None and len(owner) > 200:
            raise ServiceError(400, "'owner' must be a user name of at most 200 characters")
        if not self.me.sees_all:
            owner = self.me.owner
        elif notebooks and owner is None and self.hub is not None:
            owner = self.me.owner  # a notebook path is the asking user's: others' Untitled.ipynb is not it
        return self._service.list(statuses, limit, offset, text=text, owner=owner, notebooks=notebooks)

    def tasks_by_id(self, task_ids: list[str]) -> list[dict]:
        return [t if t.get("owner", self.me.owner) == self.me.owner or self.me.sees_all else lost(t["id"])
                for t in self._service.tasks_by_id(task_ids)]

    def results_many(self, task_ids: list[str]) -> list[tuple[dict, bytes]]:
        """As the service's; someone else's task is reported as one that does not exist."""
        return self._service.results_many(task_ids, owner=None if self.me.sees_all else self.me.owner)

    def cancel(self, task_ids: Any) -> dict:
        if self.me.sees_all or not isinstance(task_ids, list):
            return self._service.cancel(task_ids)
        known = {t["id"]: t for t in self._service.store.list(None, limit=len(task_ids) or 1,
                                                               ids=[i for i in task_ids if isinstance(i, str)])}
        mine = [i for i in task_ids if self._visible(known.get(i))]
        answer = self._service.cancel(mine)
        answer["not_cancelled"] += [{"id": i, "reason": "no such task"} for i in dict.fromkeys(task_ids)
                                    if i not in mine]
        return answer

    def finished(self, task_ids) -> set[str]:
        """As the service's; someone else's task counts as finished, as an unknown id does (nothing to wait
        for), so waiting on it tells nothing."""
        if self.me.sees_all or self.hub is None:
            return self._service.finished(task_ids)
        task_ids = list(task_ids)
        statuses = self.store.statuses(task_ids)
        return {i for i in task_ids if statuses.get(i, TaskStatus.COMPLETE) in FINAL}

    # -- blobs: each is its uploaders' (blobstore.py), in a personal server too -----------------------
    def has_blob(self, key: str) -> bool:
        return self._service.has_blob(key, self.me.owner)

    def put_blob(self, key: str, spooled) -> bool:
        return self._service.put_blob(key, spooled, self.me.owner)

    # -- warm task processes: a user's own (an admin's: everyone's) ----------------------------------
    def drop_warm(self) -> dict:
        return self._service.drop_warm(None if self.me.sees_all else self.me.owner)

    def metrics(self) -> bytes:
        """The Prometheus metrics (server/metrics.py). On the hub service they are the whole queue's and every
        user's, so only a hub admin (or a member of ``hub_admin_group``) may read them: anyone else gets 403,
        never a subset that would still tell them about others' work."""
        if self.hub is None:
            return self._service.metrics(per_user=False)
        if not self.me.sees_all:
            raise ServiceError(403, "the task queue's metrics are the whole hub's: only a hub admin (or a member of "
                                    "TaskQueue.hub_admin_group) may read them; scrape with an admin's API token",
                               "forbidden")
        return self._service.metrics(per_user=True)

    def stats(self) -> dict:
        from ..quotas import empty_usage, usage_by_owner

        stats = self._service.stats()
        usage = usage_by_owner(self._service.store)
        if self.hub is None:
            stats["users"] = usage
            stats["you"] = {"name": self.me.owner, "sees_all": True}  # the panel's "Mine" (a personal server)
            return stats
        if not self.me.sees_all:
            usage = {self.me.owner: usage.get(self.me.owner, empty_usage())}
            for worker in stats["workers"]:  # another user's task: busy, but not whose or what
                if worker["current_task"] and not self._visible(self._service.store.get(worker["current_task"])):
                    worker.update(current_task=None, current_task_name=None)
                worker["warm"] = [w for w in worker["warm"] if w.get("owner") == self.me.owner]  # their own
            stats["counts"] = {s.value: 0 for s in TaskStatus} | usage[self.me.owner]["tasks"]  # their own
        stats["users"] = usage
        stats["you"] = {"name": self.me.owner, "sees_all": self.me.sees_all}
        return stats


class _OwnStore:
    """A store whose ``statuses`` answers only for one owner's tasks (others read as missing)."""

    CHUNK = 10_000  # ids per query (SQLite's limit on bound parameters is 32,766)

    def __init__(self, store, owner: str):
        self._store = store
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        """Fails closed, as :class:`OwnerView` does: a store method not scoped here is refused to hub users."""
        raise NotScoped(f"TaskStore.{name} is not scoped to the asking user: scope it in owners._OwnStore")

    def attempts(self, task_id: str) -> list[dict]:
        """One task's attempts: its id came in the URL, which :func:`guard` checked is this user's."""
        return self._store.attempts(task_id)

    def statuses(self, ids) -> dict[str, str]:
        ids, found = list(ids), {}
        for start in range(0, len(ids), self.CHUNK):
            chunk = ids[start:start + self.CHUNK]
            found.update({t["id"]: t["status"] for t in self._store.list(None, limit=len(chunk) or 1, ids=chunk,
                                                                          owner=self._owner)})
        return found
