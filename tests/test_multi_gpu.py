"""Tasks that need several GPUs (issue 26), on a GPU-less machine: explicit device lists, asserted through
CUDA_VISIBLE_DEVICES and jupyter_taskq.gpus(). Gangs on one machine, a reservation that no stream of
gpu=1 tasks can starve, backfill that cannot delay it, a dead worker's gang freed, GPU quotas in GPUs."""

from __future__ import annotations

import os
import signal

import pytest
import requests

from conftest import TOKEN, wait_for
from jupyter_taskq.notebook.client import TaskqError
from jupyter_taskq.quotas import Quotas
from test_fairshare import write_policy

BACKENDS = ["sqlite", "redis"]  # the same behaviour on both queues
AUTH = {"Authorization": f"token {TOKEN}"}


def hold_gpus(started_dir, gate):
    """Say which GPUs this attempt sees (a file named after them), then hold them until the gate opens."""
    import os
    import time

    import jupyter_taskq

    seen = os.environ["CUDA_VISIBLE_DEVICES"]
    assert jupyter_taskq.gpus() == [int(g) for g in seen.split(",")]
    open(os.path.join(started_dir, f"{os.getpid()}-{seen}"), "w").close()
    while not os.path.exists(gate):
        time.sleep(0.01)
    return seen


def started(folder) -> list[str]:
    return sorted(p.name.split("-", 1)[1] for p in folder.iterdir())


def gpu_tasks(client) -> dict[str, str | None]:
    """Stats: the task that holds each GPU worker's GPU (once each GPU's worker names all of the gang's)."""
    workers = [w for w in client.stats()["workers"] if w["pool"] == "gpu" and w["alive"]]
    held = {}
    for w in workers:
        gang = [v for v in workers if v["gpu_task"] == w["gpu_task"]]
        held[w["name"]] = w["gpu_task"] if w["gpu_task"] and len(w["gpus"]) == len(gang) else None
    return held


def test_pairs_run_at_once_on_disjoint_gpus_a_third_waits_and_too_many_is_refused(make_server, tmp_path):
    server = make_server(gpus=[0, 1, 2, 3], cpu_workers=0, gpu_model="FakeGPU X1")
    client = server.client()
    seen, gate = tmp_path / "seen", tmp_path / "gate"
    seen.mkdir()
    first = client.submit(hold_gpus, (str(seen), str(gate)), gpu=2)
    second = client.submit(hold_gpus, (str(seen), str(gate)), gpu="FakeGPU:2")  # Modal's MODEL:N
    third = client.submit(hold_gpus, (str(seen), str(gate)), gpu=2)
    wait_for(lambda: len(started(seen)) == 2, 30, message="two gpu=2 tasks running")
    pairs = started(seen)
    assert sorted(d for pair in pairs for d in pair.split(",")) == ["0", "1", "2", "3"], "disjoint pairs"
    assert all(p == ",".join(sorted(p.split(","))) for p in pairs), "each in order"
    assert client.get(third.id)["status"] == "PENDING"
    assert client.get(second.id)["gpu"] == 2 and client.get(second.id)["gpu_model"] == "FakeGPU X1"

    wait_for(lambda: sorted(gpu_tasks(client).values(), key=str) == sorted([first.id, first.id, second.id, second.id]), 30,
             message="stats: each GPU held by its task")
    workers = client.stats()["workers"]
    for handle in (first, second):
        held = [w for w in workers if w["gpu_task"] == handle.id]
        runner = [w for w in held if not w["lent"]]
        assert len(held) == 2 and len(runner) == 1 and len(runner[0]["gpus"]) == 2
        assert all(w["gpus"] == runner[0]["gpus"] for w in held), "the lent GPU names its gang"
    wait_for(lambda: (client.get(third.id).get("waiting_for_gpus") or {}).get("busy") == 2, 30,
             message="the third says what it waits for")
    assert client.get(third.id)["waiting_for_gpus"]["message"].startswith("waiting for 2 GPUs on one machine: 2 busy")

    # More GPUs than any machine has: 400 from REST naming the machines, and the client raises, queueing nothing.
    total = client.list()["total"]
    with pytest.raises(TaskqError, match=r"no live machine has 5 GPUs.*4 GPUs \(0 FakeGPU X1, 1 FakeGPU X1") as info:
        client.submit(hold_gpus, (str(seen), str(gate)), gpu=5)
    assert info.value.status_code == 400
    with pytest.raises(TaskqError, match="5 GPUs of model 'FakeGPU X1'"):
        client.submit(hold_gpus, (str(seen), str(gate)), gpu="FakeGPU:5")
    with pytest.raises(ValueError, match="option 'gpu' must be"):  # refused in the kernel, before sending
        client.submit(hold_gpus, (str(seen), str(gate)), gpu=65)
    answer = requests.post(server.url + "taskq/api/tasks", params={"gpu": "A100:0"}, data=b"x",
                           headers={**AUTH, "Content-Type": "application/octet-stream"})
    assert answer.status_code == 400 and "option 'gpu'" in answer.json()["message"]
    assert client.list()["total"] == total

    gate.touch()
    results = [h.result(timeout=60) for h in (first, second, third)]
    assert sorted(results[:2]) == pairs, "each ran on the pair it was seen on (which task got which: either)"
    assert len(results[2].split(",")) == 2


def test_a_gpu4_task_starts_before_gpu1_tasks_submitted_after_it(make_server, tmp_path):
    """Four busy GPUs; a gpu=4 task, then gpu=1 tasks. As the GPUs free up one by one they stay idle for the
    gpu=4 task (it holds a reservation), except for a task whose timeout ends before the reserved start."""
    server = make_server(gpus=[0, 1, 2, 3], cpu_workers=0)
    client = server.client()
    seen = tmp_path / "seen"
    seen.mkdir()
    gates = [tmp_path / f"gate{i}" for i in range(4)]
    blockers = [client.submit(hold_gpus, (str(seen), str(g)), gpu=1, timeout=600) for g in gates]
    wait_for(lambda: len(started(seen)) == 4, 30, message="four gpu=1 tasks on the four GPUs")
    big = client.submit(hold_gpus, (str(seen), str(tmp_path / "big-gate")), gpu=4)
    later = [client.submit(hold_gpus, (str(seen), str(tmp_path / "later-gate")), gpu=1) for _ in range(3)]
    short = client.submit(hold_gpus, (str(seen), str(tmp_path / "short-gate")), gpu=1, timeout=60)
    for gate in gates[:3]:
        gate.touch()
    wait_for(lambda: all(client.get(b.id)["status"] == "COMPLETE" for b in blockers[:3]), 30,
             message="three GPUs free")
    wait_for(lambda: client.get(short.id)["status"] == "RUNNING", 30,
             message="the task whose timeout ends before the reserved start backfills a free GPU")
    wait_for(lambda: (client.get(big.id).get("waiting_for_gpus") or {}).get("busy") == 2, 30,
             message="the gpu=4 task waiting on the two busy GPUs")
    note = client.get(big.id)["waiting_for_gpus"]
    assert note["message"].startswith("waiting for 4 GPUs on one machine: 2 busy until about ")
    assert sorted(note["held_by"]) == sorted([blockers[3].id, short.id])
    assert [client.get(t.id)["status"] for t in later] == ["PENDING"] * 3, "two GPUs idle: kept for the gpu=4 task"
    (tmp_path / "short-gate").touch()
    gates[3].touch()
    wait_for(lambda: client.get(big.id)["status"] == "RUNNING", 30, message="the gpu=4 task to start")
    assert [client.get(t.id)["status"] for t in later] == ["PENDING"] * 3
    assert client.get(big.id)["waiting_for_gpus"] is None
    (tmp_path / "big-gate").touch()
    (tmp_path / "later-gate").touch()
    assert big.result(timeout=30) == "0,1,2,3"
    for task in later:
        task.result(timeout=30)
        assert client.get(task.id)["started_at"] >= client.get(big.id)["ended_at"]


def test_killing_the_worker_of_a_gang_frees_all_its_gpus_and_requeues_it_once(make_server, tmp_path):
    server = make_server(gpus=[0, 1, 2, 3], cpu_workers=0)
    client = server.client()
    seen, gate = tmp_path / "seen", tmp_path / "gate"
    seen.mkdir()
    gang = client.submit(hold_gpus, (str(seen), str(gate)), gpu=4, max_retries=3)
    wait_for(lambda: len(started(seen)) == 1, 30, message="the gang running")
    wait_for(lambda: sorted(gpu_tasks(client).values(), key=str) == [gang.id] * 4, 30, message="stats: its four GPUs")
    runner = next(w for w in client.stats()["workers"] if w["gpu_task"] == gang.id and not w["lent"])
    os.kill(runner["pid"], signal.SIGKILL)
    wait_for(lambda: len(started(seen)) == 2, 60, message="the task requeued and running again")
    assert started(seen) == ["0,1,2,3", "0,1,2,3"], "all four GPUs free again, held together again"
    gate.touch()
    assert gang.result(timeout=30) == "0,1,2,3"
    task = client.get(gang.id)
    assert task["attempt"] == 2 and len(client.attempts(gang.id)) == 2, "requeued once"


def test_gpu_quota_counts_gpus_not_tasks(make_server, tmp_path):
    """A policy of 3 GPUs per user (the hub's max_gpus): a gpu=2 task holds 2, so a second gpu=2 task waits
    though two GPUs are free, and a gpu=1 task submitted after it runs."""
    server = make_server(gpus=[0, 1, 2, 3], cpu_workers=0)
    client = server.client()
    write_policy(server.state_dir, Quotas(max_gpus=3))
    seen, gate = tmp_path / "seen", tmp_path / "gate"
    seen.mkdir()
    pair = client.submit(hold_gpus, (str(seen), str(gate)), gpu=2)
    wait_for(lambda: client.get(pair.id)["status"] == "RUNNING", 30, message="the first pair")
    second_pair = client.submit(hold_gpus, (str(seen), str(gate)), gpu=2)
    single = client.submit(hold_gpus, (str(seen), str(gate)), gpu=1)
    wait_for(lambda: client.get(single.id)["status"] == "RUNNING", 30, message="the gpu=1 task within the quota")
    assert client.get(second_pair.id)["status"] == "PENDING", "2 + 2 GPUs would pass the quota of 3"
    gate.touch()
    for handle in (pair, second_pair, single):
        handle.result(timeout=30)
    assert client.get(second_pair.id)["started_at"] >= client.get(pair.id)["ended_at"]
