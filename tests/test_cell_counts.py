"""Issue 14's cell marks come from every task of the open notebook, not from the queue's newest page: both
stores count one notebook's tasks by cell and status from an index, and ``GET tasks?notebook=`` answers
them however many newer tasks other notebooks have."""

from __future__ import annotations

import uuid

from test_store_contract import new_task, store  # noqa: F401 - the two-backend fixture

from jupyter_taskq.status import TaskStatus as S

NB = "/home/ada/work/nb.ipynb"
BACKENDS = ["sqlite", "redis"]  # the HTTP test runs on both


def test_one_notebooks_tasks_by_cell_under_many_newer_ones(store):  # noqa: F811
    old = [new_task(notebook=NB, cell_id="c1", owner="ada"), new_task(notebook=NB, cell_id="c1", owner="bob"),
           new_task(notebook=NB, cell_id="c2", owner="ada"), new_task(notebook=NB, owner="ada")]  # no cell: no mark
    store.create_many(old)
    assert store.transition(old[1]["id"], S.FAILED, [S.PENDING])
    store.create_many([new_task(notebook="/elsewhere/other.ipynb", cell_id="c1") for _ in range(600)])
    store.create(new_task(notebook=None, cell_id=None))
    assert store.cell_counts([NB, "work/nb.ipynb"]) == {"c1": {"PENDING": 1, "FAILED": 1}, "c2": {"PENDING": 1}}
    assert store.cell_counts([NB], owner="ada") == {"c1": {"PENDING": 1}, "c2": {"PENDING": 1}}
    assert store.cell_counts(["/nowhere.ipynb"]) == {} and store.cell_counts([]) == {}
    store.delete(old[2]["id"])
    assert store.cell_counts([NB]) == {"c1": {"PENDING": 1, "FAILED": 1}}


def test_an_older_redis_database_is_indexed_by_notebook_once(redis_server):
    from jupyter_taskq.backends.redis_store import RedisTaskStore

    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    old = RedisTaskStore(redis_server.url, prefix=prefix)
    old.create_many([new_task(notebook=NB if i % 2 else "/other.ipynb", cell_id=f"c{i % 3}") for i in range(10)])
    old.redis.delete(*old.redis.keys(prefix + "notebook:*"), prefix + "notebooks_indexed")  # as before the index
    old.close()
    store = RedisTaskStore(redis_server.url, prefix=prefix)
    try:
        assert store.cell_counts([NB]) == {"c0": {"PENDING": 2}, "c1": {"PENDING": 2}, "c2": {"PENDING": 1}}
    finally:
        store.close()


def test_get_tasks_by_notebook_counts_every_task_of_that_notebook(make_server):
    """``GET tasks?notebook=`` (what the Lab extension asks once per open notebook) counts by cell every
    task the notebook submitted, here behind 600 newer tasks of another notebook."""
    import requests

    from conftest import TOKEN

    server = make_server(cpu_workers=1)
    client = server.client()
    client.submit(abs, (1,), notebook=NB, cell_id="c1")
    client.submit(abs, (2,), notebook=NB, cell_id="c2")
    client.submit_many(abs, range(600), notebook="/elsewhere/other.ipynb", cell_id="c1")

    def get(*notebooks: str) -> requests.Response:
        return requests.get(server.url + "taskq/api/tasks", params=[("notebook", n) for n in notebooks],
                            headers={"Authorization": f"token {TOKEN}"}, timeout=10)

    answer = get(NB, "work/nb.ipynb").json()
    assert {cell: sum(by_status.values()) for cell, by_status in answer["cells"].items()} == {"c1": 1, "c2": 1}
    assert answer["total"] == 2
    assert get("/nowhere.ipynb").json() == {"cells": {}, "total": 0}
    refused = get(*[f"/n{i}.ipynb" for i in range(9)])
    assert refused.status_code == 400 and "at most 8 paths" in refused.json()["message"]
    assert len(client.list(limit=1000)["tasks"]) == 602  # the plain listing is unchanged


def test_a_hub_user_counts_only_their_own_tasks_of_a_notebook(store):  # noqa: F811
    """On a hub, a user's notebook counts only their own tasks (hub/owners.py scopes ``list``), an admin's too."""
    from jupyter_taskq.hub.hubtenancy import HubTenancy
    from jupyter_taskq.hub.options import HubSettings
    from jupyter_taskq.hub.tenancy import Identity
    from jupyter_taskq.server.service import TaskService

    store.create_many([new_task(notebook=NB, cell_id="c1", owner=who) for who in ("ada", "bob")])
    service = TaskService.__new__(TaskService)  # only list() is asked: it reads the store
    service.store = store
    bob = HubTenancy(HubSettings()).scope(service, Identity("bob", sees_all=False))
    assert bob.list(notebooks=[NB]) == {"cells": {"c1": {"PENDING": 1}}, "total": 1}
    # A notebook path is its user's own (another user's Untitled.ipynb is another notebook): an admin's
    # marks count the admin's tasks, or one user's when asked for by name.
    admin = HubTenancy(HubSettings()).scope(service, Identity("root", sees_all=True))
    assert admin.list(notebooks=[NB])["total"] == 0
    assert admin.list(notebooks=[NB], owner="ada") == {"cells": {"c1": {"PENDING": 1}}, "total": 1}
