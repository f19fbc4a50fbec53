"""Asking for a GPU model: `gpu="A100"` runs only on a worker whose GPU model matches, on whatever
machine it is; a model no live worker has is refused at submission with the models there are."""

from __future__ import annotations


import pytest

from conftest import TaskqServer, start_worker_machine, stop_processes, wait_for
from jupyter_taskq.notebook.client import TaskqError

A100 = "NVIDIA A100-SXM4-80GB"
H100 = "NVIDIA H100 80GB HBM3"


def seen_device():
    import os

    return os.environ["CUDA_VISIBLE_DEVICES"]


def test_one_machine_configured_model(make_server):
    server = make_server(gpus=[0, 1], cpu_workers=1, gpu_model="A100")
    client = server.client()
    handles = [client.submit(seen_device, gpu="a100") for _ in range(4)]
    assert {h.result(timeout=30) for h in handles} <= {"0", "1"}
    task = client.get(handles[0].id)
    assert task["gpu"] == 1 and task["gpu_model"] == "A100"
    assert {w["model"] for w in client.stats()["workers"] if w["pool"] == "gpu"} == {"A100"}
    with pytest.raises(TaskqError) as refused:
        client.submit(seen_device, gpu="H100")
    assert refused.value.status_code == 400 and "'A100'" in str(refused.value)


def test_models_route_across_machines(tmp_path):
    files = tmp_path / "shared-files"
    server = TaskqServer(tmp_path, gpus=[], cpu_workers=0, backend="redis", start_workers=False,
                         files_dir=str(files))
    server.start(wait_workers=False)
    machines = []
    try:
        for name, gpus, model in (("alpha", "0", A100), ("beta", "1", H100)):
            machines.append(start_worker_machine(tmp_path, name, server.redis.url, files, "--gpus", gpus,
                                                 "--gpu-model", model, "--cpu-workers", "0"))
        client = server.client()
        wait_for(lambda: sum(w["alive"] for w in client.stats()["workers"]) == 2, 60, 0.1, "two GPU workers")
        assert {w["name"]: w["model"] for w in client.stats()["workers"]} == {"alpha/gpu0": A100, "beta/gpu1": H100}

        on_a100 = [client.submit(seen_device, gpu="A100") for _ in range(6)]
        on_h100 = [client.submit(seen_device, gpu="h100") for _ in range(6)]
        anywhere = [client.submit(seen_device, gpu=1) for _ in range(6)]
        assert {h.result(timeout=60) for h in on_a100} == {"0"}
        assert {h.result(timeout=60) for h in on_h100} == {"1"}
        assert {h.result(timeout=60) for h in anywhere} <= {"0", "1"}
        assert {client.get(h.id)["worker"] for h in on_a100} == {"alpha/gpu0"}
        assert client.get(on_h100[0].id)["gpu_model"] == H100

        again = client.retry(on_a100[0].id)
        assert again.result(timeout=60) == "0" and client.get(again.id)["gpu_model"] == A100

        for wanted, words in (("V100", ["no live worker", A100, H100]), ("NVIDIA", ["several GPU models"])):
            with pytest.raises(TaskqError) as refused:
                client.submit(seen_device, gpu=wanted)
            assert refused.value.status_code == 400
            assert all(word in str(refused.value) for word in words), str(refused.value)
        assert client.list()["total"] == 19, "a refused submission leaves nothing behind"
    finally:
        stop_processes(machines)
        server.close()
