"""Issue 12: a Redis that keeps nothing on disk would lose the whole queue on its restart, silently.

The server refuses to start on one (unless ``redis_allow_volatile=True``), saying why; a task the
queue no longer knows is reported as LOST, never ``status: null``; with AOF (the test fixture's
Redis) a Redis restart loses nothing.
"""

from __future__ import annotations

import time

import pytest
import requests

from conftest import TOKEN, RedisServer, TaskqServer, wait_for

AUTH = {"Authorization": f"token {TOKEN}"}


def double(x):
    return 2 * x


@pytest.fixture
def servers(tmp_path):
    made = []

    def make(name: str, persistent: bool, **config) -> TaskqServer:
        root = tmp_path / name
        root.mkdir()
        server = TaskqServer(root, cpu_workers=1, backend="redis", **config)
        server.redis = RedisServer(root, persistent=persistent).start()
        server.config["redis_url"] = server.redis.url
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def test_refuses_to_start_on_redis_without_persistence(servers):
    server = servers("volatile", persistent=False)
    with pytest.raises(AssertionError, match="server exited"):
        server.start()
    log = server.log_path.read_text()
    assert "not starting" in log and "no persistence" in log and "redis_allow_volatile" in log
    assert "appendonly yes" in log  # says how to fix it


def test_allowed_volatile_redis_reports_lost_tasks_as_lost(servers):
    server = servers("allowed", persistent=False, redis_allow_volatile=True).start()
    assert "a restart of Redis loses every task" in server.log_path.read_text()
    client = server.client()
    done = client.submit(double, (2,))
    assert done.result(timeout=30) == 4
    server.redis.stop()  # Redis restarts empty: every task is gone
    server.redis.start()
    reply = wait_for(lambda: _wait_reply(server, [done.id]), 30, 0.2, "tasks/wait to answer after the Redis restart")
    [task] = reply["tasks"]
    assert task["status"] == "LOST" and task["error"]["type"] == "TaskLost"
    assert "lost" in task["error"]["message"] and reply["done"]


def test_redis_with_aof_loses_nothing_on_restart(servers):
    server = servers("aof", persistent=True).start()
    client = server.client()
    handle = client.submit(double, (21,))
    assert handle.result(timeout=30) == 42
    time.sleep(1.5)  # appendfsync everysec: the last second may be lost by a kill -9, by design
    server.redis.stop()
    server.redis.start()
    task = wait_for(lambda: _get(server, handle.id), 30, 0.2, "the task after the Redis restart")
    assert task["status"] == "COMPLETE"
    assert client.submit(double, (5,)).result(timeout=60) == 10  # and the queue goes on


def _wait_reply(server, ids):
    try:
        response = requests.post(server.url + "taskq/api/tasks/wait", json={"task_ids": ids, "timeout": 0},
                                 headers=AUTH, timeout=5)
    except requests.RequestException:
        return None
    return response.json() if response.status_code == 200 else None


def _get(server, task_id):
    try:
        response = requests.get(server.url + f"taskq/api/tasks/{task_id}", headers=AUTH, timeout=5)
    except requests.RequestException:
        return None
    return response.json() if response.status_code == 200 else None
