"""``TaskGroup.results()`` fetches results in bulk (``POST tasks/results``), not one request per task
(issue 21: a map of 1,000 tiny tasks took 10 s for ``results()``), and hands back exactly what fetching
them one by one did: values in order, the task's own exception with its remote traceback, TaskFailed for
a cancelled task, a big result streamed on its own."""

from __future__ import annotations

import requests

from conftest import TOKEN

from jupyter_taskq.batchstream import read_frames
from jupyter_taskq.notebook.client import RemoteTraceback, TaskFailed

AUTH = {"Authorization": f"token {TOKEN}"}


def square(x):
    if x == 7:
        raise KeyError(f"no {x}")
    return x * x


def big(n):
    return b"x" * n


def wait_for_file(path):
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.05)
    return "done"


def counting(client) -> list[str]:
    """The requests ``client`` makes from now on (a real session, counted by its response hook)."""
    seen: list[str] = []
    client.session.hooks["response"].append(lambda r, *a, **k: seen.append(f"{r.request.method} {r.url}"))
    return seen


def test_results_of_a_map_come_in_a_few_requests_in_order(shared_server):
    client = shared_server.client()
    handles = client.submit_many(square, [(i,) for i in range(40) if i != 7])
    client.wait([h.id for h in handles], timeout=120)
    seen = counting(client)
    assert client.results([h.id for h in handles], timeout=60) == [i * i for i in range(40) if i != 7]
    assert len(seen) == 1 and seen[0].endswith("/taskq/api/tasks/results"), seen


def test_failures_are_the_tasks_own_exceptions_or_raised_in_order(shared_server, tmp_path):
    client = shared_server.client()
    handles = client.submit_many(square, [(5,), (7,), (6,)])
    gate = tmp_path / "gate"
    cancelled = client.submit(wait_for_file, (str(gate),))
    client.cancel([cancelled.id])
    ids = [h.id for h in handles] + [cancelled.id]
    values = client.results(ids, timeout=120, return_exceptions=True)
    assert values[0] == 25 and values[2] == 36
    assert isinstance(values[1], KeyError) and values[1].args == ("no 7",)
    assert isinstance(values[1].__cause__, RemoteTraceback) and "KeyError" in str(values[1].__cause__)
    assert isinstance(values[3], TaskFailed) and values[3].status == "CANCELLED"
    try:
        client.results(ids, timeout=60)
    except KeyError as exc:  # the first failure in order, not the cancelled task after it
        assert exc.args == ("no 7",)
    else:
        raise AssertionError("results() returned despite a failed task")


def test_a_big_result_is_streamed_on_its_own_and_small_ones_stay_in_the_batch(shared_server):
    client = shared_server.client()
    handles = client.submit_many(big, [(10,), (3 * 1024 * 1024,), (20,)])
    client.wait([h.id for h in handles], timeout=120)
    seen = counting(client)
    values = client.results([h.id for h in handles], timeout=60)
    assert [len(v) for v in values] == [10, 3 * 1024 * 1024, 20]
    assert len(seen) == 2 and seen[1].endswith(f"/tasks/{handles[1].id}/result?wait=30.0"), seen


def test_the_bulk_answer_says_pending_for_an_unfinished_task_and_lost_for_an_unknown_id(shared_server, tmp_path):
    client = shared_server.client()
    running = client.submit(wait_for_file, (str(tmp_path / "gate"),))
    answer = requests.post(shared_server.url + "taskq/api/tasks/results", headers=AUTH, stream=True,
                           json={"task_ids": [running.id, "no-such-task"], "wait": 0.2})
    assert answer.status_code == 200
    heads = [head for head, _data in read_frames(answer.raw)]
    assert heads[0]["id"] == running.id and heads[0]["kind"] == "pending"
    assert heads[1]["kind"] == "none" and heads[1]["task"]["status"] == "LOST"
    (tmp_path / "gate").touch()
    assert running.result(timeout=60) == "done"


def test_bad_bulk_requests_are_clear_400s(shared_server):
    url = shared_server.url + "taskq/api/tasks/results"
    for body, words in [({"task_ids": "abc"}, "task_ids"), ({"task_ids": [1]}, "task_ids"),
                        ({"task_ids": ["a"] * 1001}, "at most 1000"), ({"task_ids": [], "wait": -1}, "wait"),
                        ({"task_ids": [], "wait": True}, "wait")]:
        answer = requests.post(url, headers=AUTH, json=body)
        assert answer.status_code == 400, body
        assert words in answer.json()["message"], answer.json()


def test_in_the_hub_someone_elses_result_is_a_task_that_does_not_exist_and_an_images_comes_alone(tmp_path):
    """Bulk results are scoped as ``GET tasks/<id>/result`` is: bob naming alice's finished task learns
    nothing of it (LOST, no bytes); alice and an admin get her value."""
    import pickle

    from jupyter_taskq.payload import calling_context, dumps_call
    from jupyter_taskq.backends.base import QueueMap
    from jupyter_taskq.backends.hueyqueue import open_queue
    from jupyter_taskq.hub.hubtenancy import HubTenancy
    from jupyter_taskq.hub.options import HubSettings
    from jupyter_taskq.hub.tenancy import Identity
    from jupyter_taskq.server.service import TaskService
    from jupyter_taskq.statedir import StateDir
    from jupyter_taskq.status import TaskStatus
    from jupyter_taskq.backends.sqlite_store import SqliteTaskStore

    state = StateDir.create(tmp_path / "state")
    store = SqliteTaskStore(str(state.db))
    service = TaskService(state, store, QueueMap(lambda pool: open_queue(state, pool)), gpus=[], workers_per_gpu=1,
                          cpu_workers=1, max_retries=0, retry_delay=0, retry_backoff=1, result_ttl=3600)

    def view(name, admin=False):
        return HubTenancy(HubSettings()).scope(service, Identity(name, sees_all=admin))

    alice = view("alice")
    [task] = alice.submit_many([(service.spool_bytes(dumps_call(square, (3,), {}, context=calling_context())),
                                 alice.validate_options({}))])
    service.state.result(task["id"]).write_bytes(pickle.dumps(9))
    assert store.transition(task["id"], TaskStatus.COMPLETE, [TaskStatus.PENDING])
    [(head, data)] = view("bob").results_many([task["id"]])
    assert head["kind"] == "none" and head["task"]["status"] == "LOST" and data == b""
    for who in (alice, view("root", admin=True)):
        [(head, data)] = who.results_many([task["id"]])
        assert head["kind"] == "result" and pickle.loads(data) == 9
    # A task that ran in an image: its result comes alone, where the kernel compares the image's packages.
    store.update_fields(task["id"], environment={"hash": "0" * 16, "packages": [], "python": "3.11"})
    [(head, data)] = alice.results_many([task["id"]])
    assert head["kind"] == "big" and data == b""
    store.close()


def test_iterating_over_a_group_takes_its_results_from_a_bulk_fetch(shared_server):
    """``[h.result() for h in group]``, as many notebooks write it, costs one request for a finished map,
    and a failed task still raises its own exception at its place."""
    from jupyter_taskq.notebook.group import TaskGroup

    client = shared_server.client()
    group = TaskGroup(client.submit_many(square, [(i,) for i in range(30)]))
    client.wait(group.ids, timeout=120)
    seen = counting(client)
    values = []
    for handle in group:
        try:
            values.append(handle.result(timeout=60))
        except KeyError as exc:
            values.append(exc.args)
    assert values == [("no 7",) if i == 7 else i * i for i in range(30)]
    assert len(seen) == 1 and seen[0].endswith("/taskq/api/tasks/results"), seen
    assert group[3].result(timeout=60) == 9  # asked again: from the server, not a stale copy
