"""State on disk (private, bounded by TTL, streamed) and workers that outlive the server."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import psutil
import requests

from conftest import TOKEN, TaskqServer, wait_for


def echo(x):
    return x


def length(data):
    return len(data)


def wait_for_file(path):
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.01)
    return os.getpid()


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_state_files_are_user_only(shared_server):
    client = shared_server.client()
    handle = client.submit(echo, ("secret",))
    assert handle.result(timeout=30) == "secret"
    state = shared_server.state_dir
    assert mode(state) == 0o700
    for sub in ("payloads", "results", "logs", "spool", "bells"):
        assert mode(state / sub) == 0o700, sub
    attempt_dir = state / "outputs" / handle.id / "1"  # each attempt's own folder holds its log
    for folder in (state / "outputs" / handle.id, attempt_dir):
        assert mode(folder) == 0o700, folder
    for path in (state / "taskq.db", state / "taskq.db-wal", state / "payloads" / f"{handle.id}.payload",
                 state / "results" / f"{handle.id}.result", attempt_dir / "log",
                 state / "bells" / "work-cpu.fifo"):
        assert mode(path) == 0o600, path


def test_results_expire_after_their_ttl(make_server):
    server = make_server(gpus=[], cpu_workers=1, cleanup_interval=0.5)
    client = server.client()
    short = client.submit(echo, ("short-lived",), result_ttl=1)
    kept = client.submit(echo, ("kept",))
    assert short.result(timeout=20) == "short-lived" and kept.result(timeout=20) == "kept"
    result_file = server.state_dir / "results" / f"{short.id}.result"
    wait_for(lambda: not result_file.exists(), 15, message="the expired result removed from disk")
    response = requests.get(server.url + f"taskq/api/tasks/{short.id}/result", headers={"Authorization": f"token {TOKEN}"})
    assert response.status_code == 410 and "expired" in response.json()["message"]
    assert client.get(short.id)["result"]["expired"] is True
    assert kept.result(timeout=5) == "kept"


def test_a_large_payload_streams_to_disk(shared_server):
    """A 200 MB argument round-trips without the server holding it in memory several times."""
    server_proc = psutil.Process(shared_server.proc.pid)
    before = server_proc.memory_info().rss
    data = os.urandom(1024) * (200 * 1024)
    handle = shared_server.client().submit(length, (data,))
    assert handle.result(timeout=120) == len(data)
    grown = server_proc.memory_info().rss - before
    assert grown < 100 * 1024 * 1024, f"server grew by {grown / 2**20:.0f} MiB for a 200 MiB payload"


def test_standalone_workers_keep_running_across_a_server_kill(tmp_path):
    """`jupyter taskq worker` outlives the server: a task keeps running while the server is down."""
    server = TaskqServer(tmp_path, gpus=[], cpu_workers=1, start_workers=False)
    server.start(wait_workers=False)
    workers = subprocess.Popen([sys.executable, "-m", "jupyter_taskq.worker", "--state-dir", str(server.state_dir),
                                "--gpus", "", "--cpu-workers", "1"], start_new_session=True)
    try:
        client = server.client()
        wait_for(lambda: any(w["alive"] for w in client.stats()["workers"]), 30, message="standalone worker")
        gate = tmp_path / "gate"
        handle = client.submit(wait_for_file, (str(gate),))
        wait_for(lambda: client.get(handle.id)["status"] == "RUNNING", 20, message="RUNNING")
        server.kill()
        gate.touch()
        server.start(wait_workers=False)
        client = server.client()
        client.wait([handle.id], timeout=30)
        task = client.get(handle.id)
        assert task["status"] == "COMPLETE" and task["attempt"] == 1
        assert client.submit(echo, (7,)).result(timeout=20) == 7
    finally:
        workers.terminate()
        workers.wait(20)
        server.stop()
