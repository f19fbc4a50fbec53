"""A full state directory (on a 30 MiB tmpfs): the API says so, space can be freed through it, workers
wait instead of crash-looping, and everything resumes by itself once there is space again."""

from __future__ import annotations

import base64
import errno
import os
import subprocess

import pytest
import requests

from conftest import TOKEN, TaskqServer, wait_for
from jupyter_taskq import payload

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"token {TOKEN}"}


def double(x):
    return 2 * x


def hold(gate):
    import os
    import time

    while not os.path.exists(gate):
        time.sleep(0.01)
    return "held"


def fill(directory):
    """Write a file into ``directory`` until its disk is full (to the last byte)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def small_state_dir(tmp_path):
    root = tmp_path / "server"
    (root / "state").mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m,mode=0700", "tmpfs", str(root / "state")],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield root
    subprocess.run(["umount", "-l", str(root / "state")])


def post_task(server, fn, *args):
    return requests.post(server.url + "taskq/api/tasks", data=payload.dumps_call(fn, args),
                         headers={**AUTH, "Content-Type": "application/octet-stream"}, timeout=30)


def test_a_full_state_directory_is_reported_freed_through_the_api_and_recovered_from(small_state_dir, tmp_path):
    server = TaskqServer(small_state_dir, gpus=[], cpu_workers=2).start()
    try:
        client = server.client()
        done = client.submit(double, (1,))
        assert done.result(timeout=30) == 2
        gate = tmp_path / "gate"
        held = client.submit(hold, (str(gate),), max_retries=3)
        wait_for(lambda: client.get(held.id)["status"] == "RUNNING", 30, message="a task running")
        workers = server.worker_pids()
        tracebacks = server.log_path.read_text().count("Traceback")

        filler = fill(server.state_dir)
        refused = post_task(server, double, 2)
        assert refused.status_code == 507, refused.text
        assert "state directory is full" in refused.json()["message"]
        batch = requests.post(server.url + "taskq/api/tasks/batch", headers=AUTH, timeout=30, json={
            "tasks": [{"payload": base64.b64encode(payload.dumps_call(double, (3,))).decode()}]})
        assert batch.status_code == 507, batch.text
        gate.touch()  # the running task finishes while nothing can be written

        deleted = requests.delete(server.url + f"taskq/api/tasks/{done.id}", headers=AUTH, timeout=30)
        assert deleted.status_code == 204, deleted.text  # space can be freed through the API
        assert requests.get(server.url + f"taskq/api/tasks/{done.id}", headers=AUTH).status_code == 404
        assert client.stats()  # reads still answer

        wait_for(lambda: server.state_dir.joinpath("filler").exists(), 1)
        filler.unlink()  # space again: everything resumes by itself
        assert held.result(timeout=90) == "held"
        assert client.submit(double, (21,)).result(timeout=60) == 42
        assert client.list(status=["RUNNING", "PENDING", "RETRY"])["total"] == 0
        assert server.worker_pids() == workers  # the workers waited; none crashed and was restarted
        assert server.log_path.read_text().count("Traceback") - tracebacks < 10
    finally:
        server.close()


def test_waiting_tasks_cancel_on_a_full_state_directory(small_state_dir):
    """A flood of waiting tasks can be stopped before anything is deleted: a cancel is a small status write,
    which the server makes even on a full disk (never 507)."""
    server = TaskqServer(small_state_dir, gpus=[], cpu_workers=1, start_workers=False).start()  # all wait
    try:
        client = server.client()
        flood = client.submit_many(double, [(i,) for i in range(2000)])
        first = client.submit(double, (1,))
        fill(server.state_dir)
        assert post_task(server, double, 2).status_code == 507  # the disk is full indeed

        one = requests.post(server.url + "taskq/api/tasks/cancel", headers=AUTH, timeout=60,
                            json={"task_ids": [first.id]})
        assert one.status_code == 200, one.text
        assert one.json() == {"cancelled": [first.id], "not_cancelled": []}
        every = requests.post(server.url + "taskq/api/tasks/cancel", headers=AUTH, timeout=120,
                              json={"task_ids": [h.id for h in flood]})
        assert every.status_code == 200, every.text
        assert len(every.json()["cancelled"]) == 2000 and every.json()["not_cancelled"] == []
        assert client.list(status=["PENDING", "RETRY"])["total"] == 0
        assert client.list(status=["CANCELLED"])["total"] == 2001
    finally:
        server.close()
