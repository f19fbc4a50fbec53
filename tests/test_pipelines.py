"""Work that waits for work, and work that waits for a time (issue 24): ``after=``, results passed as
arguments, ``start_at=``/``delay=``; on SQLite and on Redis (the dependants released by the server
while workers change their dependencies' statuses)."""

from __future__ import annotations

import datetime
import pytest

import jupyter_taskq
from jupyter_taskq import TaskFailed, task_queue
from jupyter_taskq.notebook.client import TaskqError

from conftest import TOKEN, wait_for

BACKENDS = ["sqlite", "redis"]


@task_queue(max_retries=0)
def prepare(x):
    return x * 10


@task_queue(max_retries=0)
def train(values, fail):
    import time as _t

    _t.sleep(1.0)  # long enough for the test to see the last stage PENDING, waiting for this one
    if fail:
        raise ValueError("the middle stage broke")
    return sum(values)


@task_queue(max_retries=0)
def report(total):
    return f"total={total}"


@pytest.fixture(scope="module")
def queue(shared_server):
    jupyter_taskq.connect(shared_server.url, TOKEN)
    return shared_server


def test_three_stage_pipeline_passes_results_along(queue):
    data = prepare.map([1, 2, 3])
    total = train.put(data, False)  # a TaskGroup argument: the list of its results, fetched on the worker
    last = report.put(total)
    info = last.info()
    assert info["status"] == "PENDING" and info["waiting_for"] == [total.id]
    assert set(total.info()["after"]) == set(data.ids)
    assert last.result(timeout=60) == "total=60"
    assert last.info()["waiting_for"] == []


def test_a_failing_middle_stage_cancels_what_depends_on_it(queue):
    first = prepare.map([1, 2])
    middle = train.put(first, True)
    last = report.put(middle)
    anyway = report.put("cleanup", after=[middle], after_any_outcome=True)
    wait_for(lambda: middle.info()["status"] == "RUNNING", 30, 0.05, "the middle stage running")
    assert last.info()["status"] == "PENDING" and last.info()["waiting_for"] == [middle.id]
    wait_for(lambda: last.info()["status"] == "CANCELLED", 30, 0.1, "the last stage cancelled")
    assert middle.info()["status"] == "FAILED"
    error = last.info()["error"]
    assert error["type"] == "DependencyFailed" and f"dependency {middle.id} FAILED" in error["message"]
    with pytest.raises(TaskFailed, match="FAILED"):
        last.result(timeout=5)
    assert anyway.result(timeout=60) == "total=cleanup"  # after_any_outcome=True: runs all the same
    assert [h.info()["status"] for h in first] == ["COMPLETE", "COMPLETE"]


def test_cancelling_a_dependency_cancels_a_chain(queue):
    gate = prepare.put(1, delay=60)
    second = report.put(gate)
    third = report.put(second)
    gate.cancel()
    wait_for(lambda: third.info()["status"] == "CANCELLED", 30, 0.1, "the chain cancelled")
    assert f"dependency {second.id} CANCELLED" in third.info()["error"]["message"]


def test_unknown_ids_and_bad_times_are_refused_at_submit(queue):
    client = queue.client()
    with pytest.raises(TaskqError, match="not a task of this queue") as refused:
        report.put(1, after=["0f0e0d0c-aaaa-bbbb-cccc-000000000000"])
    assert refused.value.status_code == 400
    with pytest.raises(TaskqError, match="'delay' must be"):
        report.put(1, delay=10 ** 9)
    with pytest.raises(TaskqError, match="not a task id"):
        report.put(1, after=["../etc/passwd"])
    before = client.stats()["counts"]
    with pytest.raises(TaskqError, match="tasks\\[0\\]"):  # a map is refused whole
        report.map([1, 2], after=["0f0e0d0c-aaaa-bbbb-cccc-000000000001"])
    assert client.stats()["counts"] == before  # nothing was created


def test_a_task_started_five_seconds_ahead(queue):
    at = datetime.datetime.now().astimezone() + datetime.timedelta(seconds=5)
    handle = prepare.put(4, start_at=at)
    info = handle.info()
    assert info["status"] == "PENDING"
    assert abs(datetime.datetime.fromisoformat(info["start_at"].replace("Z", "+00:00")) - at).total_seconds() < 0.01
    assert handle.result(timeout=30) == 40
    started = datetime.datetime.fromisoformat(handle.info()["started_at"].replace("Z", "+00:00"))
    assert at <= started <= at + datetime.timedelta(seconds=3), (at, started)

    later = prepare.put(5, delay=3)  # delay: seconds from now
    created = datetime.datetime.fromisoformat(later.info()["created_at"].replace("Z", "+00:00"))
    assert later.result(timeout=30) == 50
    started = datetime.datetime.fromisoformat(later.info()["started_at"].replace("Z", "+00:00"))
    assert started - created >= datetime.timedelta(seconds=2.9)
