"""GPU pinning on a GPU-less machine: explicit device lists, asserted through CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import pytest

from conftest import wait_for
from jupyter_taskq.notebook.client import TaskqError

BACKENDS = ["sqlite", "redis"]  # the same behaviour on both queues


@pytest.fixture
def server(shared_server):
    """The module's one server (GPUs 0 and 1, two CPU workers) per backend, for ``server`` and ``client``:
    each test looks only at its own tasks and leaves none running (the first needs both GPUs idle)."""
    return shared_server


def report_devices_when_released(started_dir, gate):
    """Say which devices this task sees, then hold its GPU until the test opens the gate."""
    import os
    import time

    seen = os.environ["CUDA_VISIBLE_DEVICES"]
    open(os.path.join(started_dir, f"{os.getpid()}-{seen}"), "w").close()
    while not os.path.exists(gate):
        time.sleep(0.01)
    return seen


def visible_devices(_index=None):
    import os

    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_two_gpu_tasks_run_at_once_on_different_devices_and_a_third_waits(server, tmp_path):
    client = server.client()
    started, gate = tmp_path / "started", tmp_path / "gate"
    started.mkdir()
    handles = [client.submit(report_devices_when_released, (str(started), str(gate)), gpu=1) for _ in range(3)]
    wait_for(lambda: len(list(started.iterdir())) == 2, 20, message="two GPU tasks running")
    running = {h.id: client.get(h.id) for h in handles}
    assert sorted(t["status"] for t in running.values()) == ["PENDING", "RUNNING", "RUNNING"]
    assert sorted(t["worker"] for t in running.values() if t["worker"]) == ["gpu0", "gpu1"]
    assert sorted(p.name.split("-")[1] for p in started.iterdir()) == ["0", "1"]

    gate.touch()
    results = [h.result(timeout=30) for h in handles]
    assert sorted(results[:2]) == ["0", "1"] and results[2] in ("0", "1")
    for handle, seen in zip(handles, results):
        assert client.get(handle.id)["worker"] == f"gpu{seen}"


def test_cpu_tasks_never_run_on_gpu_workers(client):
    handles = client.submit_many(visible_devices, range(20))
    client.wait([h.id for h in handles], timeout=60)
    assert all(h.result(timeout=5) == "" for h in handles)
    assert {client.get(h.id)["worker"] for h in handles} <= {"cpu0", "cpu1"}


def test_gpu_request_the_server_cannot_meet_is_refused(make_server, client):
    with pytest.raises(ValueError, match="option 'gpu' must be"):  # refused in the kernel, before sending
        client.submit(visible_devices, gpu=-1)
    with pytest.raises(TaskqError, match="no live machine has 3 GPUs"):  # the server knows its machines
        client.submit(visible_devices, gpu=3)
    cpu_only = make_server(gpus=[], cpu_workers=1).client()
    with pytest.raises(TaskqError, match="no GPU workers") as info:
        cpu_only.submit(visible_devices, gpu=1)
    assert info.value.status_code == 400
    assert cpu_only.list()["total"] == 0
