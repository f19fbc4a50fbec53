"""Many clients at once: every task completes, and SQLite never reports "database is locked"."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest


def triple(x):
    return 3 * x


@pytest.mark.slow
def test_1000_tasks_from_8_concurrent_clients(make_server):
    server = make_server(gpus=[0, 1], cpu_workers=2)

    def client_work(index: int) -> dict[str, int]:
        client = server.client()
        inputs = list(range(index * 125, (index + 1) * 125))
        handles = [client.submit(triple, (x,)) for x in inputs[:25]]  # one request each
        handles += client.submit_many(triple, inputs[25:75])  # one batch
        handles += client.submit_many(triple, inputs[75:], gpu=1)  # a batch for the GPU workers
        client.wait([h.id for h in handles], timeout=240)
        return {h.id: x for h, x in zip(handles, inputs)}

    with ThreadPoolExecutor(8) as pool:
        expected = {}
        for part in pool.map(client_work, range(8)):
            expected.update(part)
    assert len(expected) == 1000

    client = server.client()
    tasks = []
    for offset in range(0, 1000, 500):
        tasks += client.list(limit=500, offset=offset)["tasks"]
    assert {t["id"] for t in tasks} == set(expected)
    assert all(t["status"] == "COMPLETE" and t["attempt"] == 1 for t in tasks)
    for task_id in list(expected)[::50]:
        assert client.result(task_id, timeout=10) == 3 * expected[task_id]
    workers = {t["worker"] for t in tasks}
    assert workers == {"cpu0", "cpu1", "gpu0", "gpu1"}
    assert "database is locked" not in server.log_path.read_text()
