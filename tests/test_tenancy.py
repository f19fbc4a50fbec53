"""The tenancy seam fails closed (issue 20): every REST route and every public service method is either declared
for hub users, with its scope, or refused to them. In-process, no JupyterHub: runs in a second.

A route is open to hub users only if its handler declares ``hub_scope`` (one of hub/tenancy.py's ROUTE_SCOPES),
and one acting on "the URL's task" must name it (``task_id``), which the tenancy's guard checks. A service method
is reachable through a hub user's view only if OwnerView declares it (OwnerView.SCOPES); any other is refused.
"""

from __future__ import annotations

import inspect

import pytest

from jupyter_taskq.hub.hubtenancy import HubTenancy
from jupyter_taskq.hub.options import ADMIN_SCOPE, HubSettings
from jupyter_taskq.hub.owners import NotScoped, OwnerView
from jupyter_taskq.hub.tenancy import ROUTE_SCOPES, Identity, SingleUserTenancy
from jupyter_taskq.server.handlers.base import TaskqHandler
from jupyter_taskq.server.handlers.routes import handlers
from jupyter_taskq.server.service import ServiceError, TaskService

HUB = HubTenancy(HubSettings())


def test_every_route_is_declared_for_hub_users_with_its_scope_or_refused():
    routes = handlers("/")
    assert len(routes) >= 20
    for pattern, handler_class, *_ in routes:
        scope = getattr(handler_class, "hub_scope", None)
        if scope is None:
            assert not HUB.admits_route(handler_class), pattern
            continue
        assert scope in ROUTE_SCOPES, (pattern, scope)
        assert HUB.admits_route(handler_class), pattern
        if scope == "url-task":
            assert "(?P<task_id>" in pattern, f"{pattern}: 'the URL's task' needs the task id in the URL"


def test_a_route_that_declares_nothing_is_refused_to_hub_users_only():
    class Undeclared(TaskqHandler):
        pass

    class Misdeclared(TaskqHandler):
        hub_scope = "everyone's"

    for handler_class in (Undeclared, Misdeclared):
        assert not HUB.admits_route(handler_class)
        assert SingleUserTenancy().admits_route(handler_class), "a personal server's user may use every route"


def public_methods(cls) -> list[str]:
    return sorted(name for name, member in inspect.getmembers(cls)
                  if not name.startswith("_") and (callable(member) or isinstance(member, property)))


def test_every_public_service_method_is_declared_with_its_scope_or_refused(service):
    bob = HUB.scope(service, Identity("bob", sees_all=False))
    declared, refused = [], []
    for name in public_methods(TaskService):
        if name in OwnerView.SCOPES:
            assert OwnerView.SCOPES[name], name
            getattr(bob, name)  # reachable
            declared.append(name)
        else:
            with pytest.raises(NotScoped):
                getattr(bob, name)
            refused.append(name)
    assert {"submit", "list", "cancel", "get", "stats", "metrics"} <= set(declared)
    assert {"reconcile", "purge_old_records", "expire_old_results", "to_json"} <= set(refused)
    assert set(OwnerView.SCOPES) - set(declared) <= {"visible_ids", "store"}, "declared, and on the service or the view"


def test_a_hub_user_sees_only_their_own_and_the_admin_scope_sees_all(service):
    from jupyter_taskq.payload import dumps_call

    def submit(view):
        return view.submit(service.spool_bytes(dumps_call(sorted, ([2, 1],))), view.validate_options({}))

    class HubUser:  # what JupyterHub's identity provider hands the service: the hub's model of the token's user
        def __init__(self, name, scopes=(), groups=()):
            self.username = name
            self.hub_user = {"name": name, "scopes": list(scopes), "groups": list(groups)}

    from conftest import run_coroutine

    ada = run_coroutine(HUB.identify(HubUser("ada")))
    admin = run_coroutine(HUB.identify(HubUser("root", scopes=[ADMIN_SCOPE])))
    hub_admin = run_coroutine(HUB.identify(HubUser("carol", scopes=["admin:users"])))
    assert (ada.sees_all, admin.sees_all, hub_admin.sees_all) == (False, True, True)
    old_group = HubTenancy(HubSettings(admin_group="staff"))
    assert run_coroutine(old_group.identify(HubUser("dave", groups=["staff"]))).sees_all, "hub_admin_group: deprecated"

    mine = submit(HUB.scope(service, ada))
    theirs = submit(HUB.scope(service, Identity("bob", sees_all=False)))
    assert [t["id"] for t in HUB.scope(service, ada).list()["tasks"]] == [mine["id"]]
    assert HUB.scope(service, admin).list()["total"] == 2
    with pytest.raises(ServiceError) as refused:
        HUB.guard(service.store, theirs["id"], ada)
    assert refused.value.status == 404
    HUB.guard(service.store, mine["id"], ada)
    with pytest.raises(ServiceError) as refused:
        HUB.scope(service, ada).metrics()
    assert refused.value.status == 403


@pytest.fixture
def service(tmp_path):
    from jupyter_taskq.backends.base import QueueMap
    from jupyter_taskq.backends.hueyqueue import open_queue
    from jupyter_taskq.statedir import StateDir
    from jupyter_taskq.backends.sqlite_store import SqliteTaskStore

    state = StateDir.create(tmp_path / "state")
    store = SqliteTaskStore(str(state.db))
    yield TaskService(state, store, QueueMap(lambda pool: open_queue(state, pool)), gpus=[], workers_per_gpu=1,
                      cpu_workers=1, max_retries=0, retry_delay=0, retry_backoff=1, result_ttl=3600)
    store.close()
