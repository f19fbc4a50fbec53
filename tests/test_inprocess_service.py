"""The in-process layer (issue 20), part 1: the queue's domain API, ``TaskService``, in this process over
each backend of ``conftest.SERVICE_BACKENDS`` (SQLite, a real Redis), with no server and no workers.
Each rule here is also proven end to end elsewhere (a real server and real workers: test_bad_input.py,
test_lifecycle.py, test_bulk_results.py); here it takes milliseconds, so the quick loop catches a
backend that breaks it before any process starts."""

from __future__ import annotations

import pytest

from jupyter_taskq import pickling
from jupyter_taskq.payload import dumps_call
from jupyter_taskq.status import TaskStatus


def double(x):
    return 2 * x


@pytest.fixture
def service(backend_service):
    return backend_service


def submit(service, fn=double, args=(1,), **options):
    return service.submit(service.spool_bytes(dumps_call(fn, args)), service.validate_options(options))


def finish(service, task_id, value):
    """What a worker does when an attempt returns ``value``: the result file, then COMPLETE."""
    service.state.result(task_id).write_bytes(pickling.dumps(value))
    assert service.store.transition(task_id, TaskStatus.COMPLETE, [TaskStatus.PENDING])


def refused(call, status: int) -> str:
    from jupyter_taskq.server.service import ServiceError

    with pytest.raises(ServiceError) as caught:
        call()
    assert caught.value.status == status, (caught.value.status, str(caught.value))
    return str(caught.value)


@pytest.mark.parametrize("options, message", [
    ({"timeout": "-5"}, "'timeout' must be a number between 0.001 and 31536000 seconds"),
    ({"timeout": "nan"}, "'timeout' must be a number between 0.001 and 31536000 seconds"),
    ({"max_retries": "-1"}, "'max_retries' must be between 0 and 100"),
    ({"priority": "high"}, "'priority' must be an integer"),
    ({"colour": "red"}, "unknown option(s) 'colour'"),
    ({"gpu": "65"}, "option 'gpu' must be 0, a number of GPUs up to 64"),
    ({"callback_url": "ftp://x"}, "'callback_url' must be an http"),
    ({"retry_delay": "3600", "retry_backoff": "100", "max_retries": "50"}, "must be at most 2592000 s"),
    ({"memory": "lots"}, "'memory' must be between 1 and 67108864 MiB"),
])
def test_a_bad_option_is_refused_with_400_and_nothing_is_queued(service, options, message):
    assert message in refused(lambda: service.validate_options(options), 400)
    assert service.list()["total"] == 0


def test_a_task_is_listed_got_cancelled_and_deleted(service):
    first, second = submit(service, name="first"), submit(service, name="second", priority=5)
    assert first["status"] == "PENDING" and first["name"] == "first"
    listed = service.list()
    assert listed["total"] == 2 and [t["id"] for t in listed["tasks"]] == [second["id"], first["id"]], "newest first"
    assert [t["id"] for t in service.list(["PENDING"], limit=1, offset=1)["tasks"]] == [first["id"]]
    assert [t["id"] for t in service.list(text="seco")["tasks"]] == [second["id"]]
    assert service.get(second["id"])["priority"] == 5
    assert "unknown status 'LATE'" in refused(lambda: service.list(["LATE"]), 400)

    assert "cancel it before deleting it" in refused(lambda: service.delete(first["id"]), 409)
    answer = service.cancel([first["id"], "no-such-id"])
    assert answer == {"cancelled": [first["id"]], "not_cancelled": [{"id": "no-such-id", "reason": "no such task"}]}
    assert service.get(first["id"])["status"] == "CANCELLED"
    assert service.cancel([first["id"]])["not_cancelled"] == [{"id": first["id"], "reason": "already CANCELLED"}]
    service.delete(first["id"])
    refused(lambda: service.get(first["id"]), 404)
    assert service.list()["total"] == 1


def test_results_many_says_what_each_task_has_in_the_ids_order(service):
    done, failed, waiting = submit(service), submit(service), submit(service)
    finish(service, done["id"], {"answer": 42})
    service.cancel([failed["id"]])
    heads = service.results_many([waiting["id"], done["id"], "gone-id", failed["id"]])
    assert [(h["id"], h["kind"]) for h, _ in heads] == [
        (waiting["id"], "pending"), (done["id"], "result"), ("gone-id", "none"), (failed["id"], "none")]
    assert pickling.loads(heads[1][1]) == {"answer": 42}
    assert heads[2][0]["task"]["status"] == "LOST" and heads[3][0]["task"]["status"] == "CANCELLED"


def test_a_result_is_there_once_complete_and_a_retry_is_a_new_task(service):
    task = submit(service)
    assert "available once it is COMPLETE" in refused(lambda: service.result_path(task["id"]), 409)
    assert "only a finished task can be retried" in refused(lambda: service.retry(task["id"]), 409)
    finish(service, task["id"], 2)
    assert pickling.loads(service.result_path(task["id"]).read_bytes()) == 2
    again = service.retry(task["id"])
    assert again["id"] != task["id"] and again["retry_of"] == task["id"] and again["status"] == "PENDING"


def test_stats_count_tasks_by_status_and_pool(service):
    submit(service), submit(service)
    cancelled = submit(service)
    service.cancel([cancelled["id"]])
    stats = service.stats()
    assert stats["counts"].get("PENDING") == 2 and stats["counts"].get("CANCELLED") == 1
    assert sum(stats["queue_depth"].values()) == 2
    assert stats["workers"] == []
