"""Issue 12: a Redis that keeps nothing on disk would lose the whole queue on its restart, silently.

The server refuses to start on one (unless ``redis_allow_volatile=True``), saying why, and so does a
worker machine joining it (``jupyter taskq worker --redis``, unless ``--redis-allow-volatile``); a task
the queue no longer knows is reported as LOST, never ``status: null``; with AOF (the test fixture's
Redis) a Redis restart loses nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from conftest import TOKEN, RedisServer, TaskqServer, start_worker_machine, stop_processes, wait_for

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


def _worker_command(root, redis_url, *args):
    """`jupyter taskq worker` as another machine would run it, its Redis URL in the environment."""
    root.mkdir()
    return dict(args=[sys.executable, "-m", "jupyter_taskq.worker", "--state-dir", str(root / "state"),
                      "--files-dir", str(root / "files"), "--gpus", "", "--cpu-workers", "1", "--name", root.name,
                      *args],
                cwd=root, env=dict(os.environ, JUPYTER_TASKQ_REDIS_URL=redis_url))


def test_worker_machine_refuses_a_redis_without_persistence(tmp_path):
    redis_server = RedisServer(tmp_path, persistent=False).start()
    try:
        refused = subprocess.run(**_worker_command(tmp_path / "machine", redis_server.url),
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr  # one line, saying why and what to do
        assert "not starting" in lines[0] and "no persistence" in lines[0]
        assert "appendonly yes" in lines[0] and "--redis-allow-volatile" in lines[0]
        assert "redis_allow_volatile = True" not in lines[0]  # the server's option is not this command's fix
        assert not (tmp_path / "machine" / "state").exists(), "it refused before touching the queue"
    finally:
        redis_server.stop()


def test_worker_machine_joins_a_persistent_redis_and_an_allowed_volatile_one(servers, tmp_path):
    """With AOF the worker starts without a word about persistence; on a volatile Redis, with
    --redis-allow-volatile, it starts, says what a Redis restart would cost, and runs tasks."""
    for persistent in (True, False):
        name = "aof" if persistent else "volatile"
        extra = {} if persistent else {"redis_allow_volatile": True}
        files = tmp_path / f"{name}-files"
        server = servers(name, persistent=persistent, start_workers=False, files_dir=str(files), **extra)
        server.cpu_workers = 0
        server.start(wait_workers=False)
        flags = () if persistent else ("--redis-allow-volatile",)
        machine = start_worker_machine(tmp_path, f"{name}-machine", server.redis.url, files, "--gpus", "",
                                       "--cpu-workers", "1", *flags)
        try:
            client = server.client()
            wait_for(lambda: any(w["alive"] for w in client.stats()["workers"]), 60, 0.1, "the machine's worker")
            assert client.submit(double, (4,)).result(timeout=60) == 8
            log = (tmp_path / f"{name}-machine" / "worker.log").read_text()
            assert ("a restart of Redis loses every task" in log) is not persistent, log
            assert machine.poll() is None
        finally:
            stop_processes([machine])


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
