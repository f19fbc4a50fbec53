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
