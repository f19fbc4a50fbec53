"""Every task has an owner (issue 15); in a user's own server that is the server's user, whoever the
request says it is, and usage per user shows in stats."""

from __future__ import annotations

import pwd
import os

import requests

from conftest import TOKEN


def add(a, b):
    return a + b


def test_a_personal_servers_tasks_are_its_users(client, server):
    me = os.environ.get("JUPYTERHUB_USER") or pwd.getpwuid(os.getuid()).pw_name
    handle = client.submit(add, (1, 2))
    assert handle.result(timeout=60) == 3
    assert client.get(handle.id)["owner"] == me, "not jupyter_server's random name for a token request"
    claimed = requests.post(server.url + "taskq/api/tasks", params={"owner": "someone-else"}, data=b"x",
                            headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/octet-stream"})
    assert claimed.status_code == 400 and "owner" in claimed.json()["message"]
    usage = client.stats()["users"]
    assert usage[me]["tasks"] == {"COMPLETE": 1} and usage[me]["gpu_seconds_today"] == 0


class _FakeHub:
    """JupyterHub's ``GET /hub/api/users/<name>``, as the service's token reads it (admin flag, groups)."""

    def __init__(self, users: dict[str, dict]):
        import http.server
        import json
        import threading

        self.asked: list[str] = []
        asked = self.asked

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                asked.append(name)
                body = json.dumps({"name": name, **users.get(name, {"admin": False, "groups": []})}).encode()
                self.send_response(200 if self.headers.get("Authorization") == "token service-token" else 403)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api_url = f"http://127.0.0.1:{self.server.server_address[1]}/hub/api"
        self.api_token = "service-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_an_admins_retry_counts_against_the_owners_queued_quota_with_the_owners_groups(tmp_path):
    """The hub service's queued-tasks quota, when a hub admin retries someone else's task: the retry is a
    new waiting task of the owner's, so the owner's quota (and their groups' overrides, asked of the hub)
    decides, never the admin's."""
    import pytest

    from jupyter_taskq.payload import dumps_call
    from jupyter_taskq.backends.base import QueueMap
    from jupyter_taskq.backends.hueyqueue import open_queue
    from jupyter_taskq.quotas import Quotas
    from jupyter_taskq.hub.hubtenancy import HubTenancy
    from jupyter_taskq.hub.options import HubSettings
    from jupyter_taskq.hub.tenancy import Identity
    from jupyter_taskq.server.service import ServiceError, TaskService
    from jupyter_taskq.statedir import StateDir
    from jupyter_taskq.status import TaskStatus
    from jupyter_taskq.backends.sqlite_store import SqliteTaskStore

    state = StateDir.create(tmp_path / "state")
    store = SqliteTaskStore(str(state.db))
    service = TaskService(state, store, QueueMap(lambda pool: open_queue(state, pool)), gpus=[], workers_per_gpu=1,
                          cpu_workers=1, max_retries=0, retry_delay=0, retry_backoff=1, result_ttl=3600)
    hub_api = _FakeHub({"bea": {"admin": False, "groups": ["big"]}, "carol": {"admin": True, "groups": []}})
    hub = HubTenancy(HubSettings(hub_auth=hub_api, quotas=Quotas(max_queued=1, overrides={"group:big": {"max_queued": 3}})))
    try:
        def as_user(name, admin=False, groups=()):
            return hub.scope(service, Identity(name, sees_all=admin, groups=tuple(groups)))

        def submit(view):
            return view.submit(service.spool_bytes(dumps_call(add, (1, 2))), view.validate_options({}))

        def finished(view):
            task = submit(view)
            assert store.transition(task["id"], TaskStatus.FAILED, [TaskStatus.PENDING])
            return task["id"]

        alice, bea = as_user("alice"), as_user("bea", groups=["big"])
        carol = as_user("carol", admin=True)
        alices_done, beas_done = finished(alice), finished(bea)
        submit(alice)  # alice (no override: 1 task waiting at most) has her one waiting task
        with pytest.raises(ServiceError) as refused:
            carol.retry(alices_done)  # carol has nothing waiting: her own quota would let it through
        assert refused.value.status == 429 and "alice may have at most 1" in str(refused.value), \
            "checked against the owner, and says so"
        assert store.count([TaskStatus.PENDING], owner="alice") == 1, "nothing was queued"

        submit(carol)  # carol now has her own one waiting task
        submit(bea)  # bea's group lets her have 3 waiting: she has 1
        retried = carol.retry(beas_done)
        assert retried["owner"] == "bea", "the retry is the owner's, charged to her"
        assert "bea" in hub_api.asked, "bea's groups were asked of the hub"
        assert store.count([TaskStatus.PENDING], owner="bea") == 2
        assert store.count([TaskStatus.PENDING], owner="carol") == 1, "the admin's own count is untouched"
        carol.retry(beas_done)  # bea's third
        with pytest.raises(ServiceError) as refused:
            carol.retry(beas_done)
        assert refused.value.status == 429 and "bea may have at most 3" in str(refused.value)
        with pytest.raises(ServiceError) as refused:
            alice.retry(alices_done)  # and a user's own retry, as before
        assert refused.value.status == 429 and "alice may have at most 1" in str(refused.value)
    finally:
        hub_api.close()
        store.close()
