"""The service as one user sees it: :class:`OwnerView`, which the tenancy's ``scope`` hands the handlers.

Every task has an owner (issue 15): the identity the tenancy worked out, never a name the client sends
(``owner`` is not a task option, so a submission cannot set it). On the hub-wide queue
(``tenancy.multi_user``) a user sees only their own tasks: someone else's reads as one that does not exist,
so ids cannot be probed. Admins (JupyterHub scope ``custom:taskq:admin``, or a hub admin) see everyone's.

It fails closed: a service method it neither scopes nor declares (:attr:`OwnerView.SCOPES`) is not reachable
through it, so a new ``TaskService`` method is never open to every hub user unscoped.
"""

from __future__ import annotations

import builtins
from typing import Any

from ..quotas import QuotaExceeded, empty_usage, usage_by_owner
from ..serviceerrors import ServiceError, lost, not_found
from ..status import FINAL, TaskStatus
from .identity import Identity


class NotScoped(AttributeError):
    """A service attribute that :class:`OwnerView` neither scopes nor declares safe for every user."""


class OwnerView:
    """The service as one user sees it. Fails closed: only the methods in :attr:`SCOPES` are reachable (those
    defined here, scoped to the user, and those in :attr:`PASS_THROUGH`); any other attribute raises
    :class:`NotScoped`."""

    #: Service methods every user may call as they are. Each acts on the one task whose id the URL names,
    #: which the tenancy's guard answered 404 for before the handler ran if it is someone else's; or touches
    #: nothing of anyone's (a fresh spool file, the change feed's fingerprint, which only says "something
    #: changed"). Declare a new method here only if that holds for it; otherwise scope it below.
    PASS_THROUGH = frozenset({
        "get", "delete", "result_path", "error_pickle_path", "log_chunk", "open_output",  # the URL's task
        "open_spool", "spool_bytes", "fingerprint",  # nobody's
    })
    #: Every service method a user reaches through the view, with its scope (tests/test_tenancy.py holds every
    #: public TaskService method to this: declared here, or refused with NotScoped).
    SCOPES = {
        **{name: "the URL's task (guarded)" for name in
           ("get", "delete", "result_path", "error_pickle_path", "log_chunk", "open_output")},
        **{name: "nobody's" for name in ("open_spool", "spool_bytes", "fingerprint")},
        "validate_options": "the owner is the asker; 'after' names only their own tasks",
        "submit": "the asker's task, under their queued-tasks quota",
        "submit_many": "the asker's tasks, under their queued-tasks quota",
        "retry": "a task they see; a new task of its owner, under the owner's quota",
        "get_task": "their own task (others: 404)",
        "list": "their own tasks (an admin: anyone's, or one owner's)",
        "tasks_by_id": "their own (others read as lost)",
        "results_many": "their own (others read as lost)",
        "cancel": "their own (others: no such task)",
        "finished": "their own (others count as finished: nothing to wait for)",
        "has_blob": "the blobs they uploaded", "put_blob": "the blobs they upload",
        "drop_warm": "their own warm processes (an admin: everyone's)",
        "metrics": "the whole queue's: admins only on the hub (403)",
        "stats": "their own counts and tasks; workers' other tasks blanked",
        "visible_ids": "those of the ids that are theirs",
        "store": "statuses and attempts of their own tasks",
    }

    def __init__(self, service, me: Identity, tenancy):
        """``tenancy``: the :class:`~.tenancy.Tenancy` that made this view (its quotas and groups)."""
        self._service = service
        self.me = me
        self.tenancy = tenancy

    def __getattr__(self, name: str) -> Any:
        if name in self.PASS_THROUGH:
            return getattr(self._service, name)
        raise NotScoped(f"jupyter-taskq: TaskService.{name} is not reachable through OwnerView: scope it to the "
                        "asking user there, or declare it in OwnerView.PASS_THROUGH if it is safe for every user")

    @property
    def _filters(self) -> bool:
        """Whether this user's view leaves others' tasks out (a hub user who is no admin)."""
        return self.tenancy.multi_user and not self.me.sees_all

    @property
    def store(self):
        """The store, its ``statuses`` limited to this user's tasks (a task group's counts, server/groups.py)."""
        return self._service.store if self.me.sees_all else _OwnStore(self._service.store, self.me.owner)

    def visible_ids(self, ids: list[str]) -> list[str]:
        """Those of ``ids`` this user may know of (the change feed names every task that changed)."""
        if not self._filters:
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
        owner = self.me.owner if owner is None else owner
        groups = self.me.groups if owner == self.me.owner else \
            self.tenancy.groups_of(owner) if self.tenancy.quota_uses_groups() else ()
        try:
            self.tenancy.admit(self._service.store, owner, groups, adding)
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
        elif notebooks and owner is None and self.tenancy.multi_user:
            owner = self.me.owner  # a notebook path is the asking user's: others' Untitled.ipynb is not it
        return self._service.list(statuses, limit, offset, text=text, owner=owner, notebooks=notebooks)

    def tasks_by_id(self, task_ids: builtins.list[str]) -> builtins.list[dict]:
        return [t if t.get("owner", self.me.owner) == self.me.owner or self.me.sees_all else lost(t["id"])
                for t in self._service.tasks_by_id(task_ids)]

    def results_many(self, task_ids: builtins.list[str]) -> builtins.list[tuple[dict, bytes]]:
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
        if not self._filters:
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
        user's, so only a queue admin may read them: anyone else gets 403, never a subset that would still tell
        them about others' work."""
        if not self.tenancy.multi_user:
            return self._service.metrics(per_user=False)
        if not self.me.sees_all:
            raise ServiceError(403, "the task queue's metrics are the whole hub's: only a queue admin (JupyterHub "
                                    "scope custom:taskq:admin, or a hub admin) may read them; scrape with an "
                                    "admin's API token", "forbidden")
        return self._service.metrics(per_user=True)

    def stats(self) -> dict:
        stats = self._service.stats()
        usage = usage_by_owner(self._service.store)
        if not self.tenancy.multi_user:
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
        raise NotScoped(f"TaskStore.{name} is not scoped to the asking user: scope it in hub/owners._OwnStore")

    def attempts(self, task_id: str) -> list[dict]:
        """One task's attempts: its id came in the URL, which the tenancy's guard checked is this user's."""
        return self._store.attempts(task_id)

    def statuses(self, ids) -> dict[str, str]:
        ids, found = list(ids), {}
        for start in range(0, len(ids), self.CHUNK):
            chunk = ids[start:start + self.CHUNK]
            found.update({t["id"]: t["status"] for t in self._store.list(None, limit=len(chunk) or 1, ids=chunk,
                                                                          owner=self._owner)})
        return found
