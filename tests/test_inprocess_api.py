"""The in-process layer (issue 20), part 2: the REST contract's main rules through the real handlers in a
Jupyter Server running in this process (pytest-jupyter's ``jp_fetch``), over each backend of
``conftest.SERVICE_BACKENDS``, with ``start_workers=False`` so no process starts: submit and its 4xx JSON
errors, list/get/cancel/delete, auth (token, cookie + XSRF), bulk results, the change feed, stats. The same
rules through a `jupyter server` subprocess and real workers: test_auth.py, test_bad_input.py,
test_bulk_results.py, test_changes_api.py, test_lifecycle.py."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import resource
import time

import pytest
from traitlets.config import Config

from conftest import SERVICE_BACKENDS, RedisServer
from jupyter_taskq import batchstream, pickling
from jupyter_taskq.payload import dumps_call
from jupyter_taskq.status import TaskStatus

# pytest-jupyter's fixtures for this module only (imported, not a conftest plugin: its autouse fixtures would
# reach every test of the suite). Importing it lowers the soft RLIMIT_NOFILE to 4,096: put it back.
_fd_limits = resource.getrlimit(resource.RLIMIT_NOFILE)
from pytest_jupyter.jupyter_server import *  # noqa: E402,F401,F403
resource.setrlimit(resource.RLIMIT_NOFILE, _fd_limits)

API = "taskq/api"
OCTET = {"Content-Type": "application/octet-stream"}


def double(x):
    return 2 * x


@pytest.fixture(scope="session")
def api_redis(tmp_path_factory):
    """A redis-server for these tests alone (the server's queue prefix is fixed: flushed before each test).
    For the session: a stopped server's Redis event relay thread lives on in this process (it is not stopped
    with the extension) and would log a reconnect attempt every second once its Redis is gone."""
    server = RedisServer(tmp_path_factory.mktemp("api-redis")).start()
    yield server
    server.stop()


@pytest.fixture(params=SERVICE_BACKENDS)
def jp_server_config(request, tmp_path):
    taskq = {"start_workers": False, "gpus": [], "cpu_workers": 1, "state_dir": str(tmp_path / "taskq-state")}
    if request.param == "redis":
        redis = request.getfixturevalue("api_redis")
        redis.flush()
        taskq["redis_url"] = redis.url
    return Config({"ServerApp": {"jpserver_extensions": {"jupyter_taskq": True}}, "TaskQueue": taskq})


@pytest.fixture
def fetch(jp_fetch, jp_asyncio_loop):
    """``jp_fetch`` run to its answer; 4xx/5xx answers are returned, not raised."""

    def call(*parts, **kwargs):
        kwargs.setdefault("raise_error", False)
        kwargs["headers"] = dict(kwargs.get("headers") or {})  # jp_fetch adds its token to the dict it gets
        return jp_asyncio_loop.run_until_complete(jp_fetch(API, *parts, **kwargs))

    return call


@pytest.fixture
def service(jp_serverapp, fetch):
    """The server's TaskService, to do in-process what a worker would (finish a task)."""
    assert fetch("stats").code == 200
    return jp_serverapp.web_app.settings["taskq_service"]


def body(response):
    return json.loads(response.body)


def submit(fetch, fn=double, args=(1,), **options):
    response = fetch("tasks", method="POST", body=dumps_call(fn, args), headers=dict(OCTET),
                     params={k: str(v) for k, v in options.items()})
    assert response.code == 201, response.body[:300]
    return body(response)


def finish(service, task_id, value):
    service.state.result(task_id).write_bytes(pickling.dumps(value))
    assert service.store.transition(task_id, TaskStatus.COMPLETE, [TaskStatus.PENDING])


def test_submit_as_a_raw_payload_or_as_json_and_get_it_back(fetch):
    raw = submit(fetch, name="raw", priority=3)
    assert raw["status"] == "PENDING" and raw["name"] == "raw" and raw["priority"] == 3
    as_json = fetch("tasks", method="POST", headers={"Content-Type": "application/json"},
                    body=json.dumps({"payload": base64.b64encode(dumps_call(double, (2,))).decode(), "name": "js"}))
    assert as_json.code == 201 and body(as_json)["name"] == "js"
    got = fetch("tasks", raw["id"])
    assert got.code == 200 and body(got)["id"] == raw["id"] and body(got)["status"] == "PENDING"
    listed = body(fetch("tasks", params={"status": "PENDING", "limit": "1"}))
    assert listed["total"] == 2 and listed["limit"] == 1 and [t["name"] for t in listed["tasks"]] == ["js"]
    assert [t["name"] for t in body(fetch("tasks", params={"q": "ra"}))["tasks"]] == ["raw"]


@pytest.mark.parametrize("request_kwargs, status, message", [
    ({"params": {"timeout": "-5"}}, 400, "'timeout' must be a number between 0.001 and 31536000 seconds"),
    ({"params": {"colour": "red"}}, 400, "unknown option(s) 'colour'"),
    ({"params": {"gpu": "1"}}, 400, "this server has no GPU workers"),  # no GPUs, and it starts no workers
    ({"body": b"not a payload"}, 400, "payload"),
    ({"headers": {"Content-Type": "application/json"}, "body": b"{nope"}, 400, "request body is not valid JSON"),
    ({"headers": {"Content-Type": "application/json"}, "body": b'{"name": "x"}'}, 400, "'payload'"),
    ({"headers": {"Content-Type": "application/json"}, "body": b'{"payload": "%%%"}'}, 400, "not valid base64"),
])
def test_a_bad_submission_is_a_4xx_json_error_and_queues_nothing(fetch, request_kwargs, status, message):
    kwargs = {"method": "POST", "body": dumps_call(double, (1,)), "headers": dict(OCTET), **request_kwargs}
    response = fetch("tasks", **kwargs)
    assert response.code == status, response.body[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    assert message in body(response)["message"]
    assert body(fetch("tasks"))["total"] == 0


def test_an_unknown_content_type_is_415_and_bad_query_values_are_400(fetch):
    assert fetch("tasks", method="POST", body=b"x", headers={"Content-Type": "text/plain"}).code == 415
    assert fetch("tasks", params={"limit": "many"}).code == 400
    assert "unknown status 'LATE'" in body(fetch("tasks", params={"status": "late"}))["message"]
    task = submit(fetch)
    assert "'wait' must be" in body(fetch("tasks", task["id"], params={"wait": "forever"}))["message"]
    missing = fetch("tasks", "no-such-task")
    assert missing.code == 404 and "no-such-task" in body(missing)["message"]


def test_cancel_then_delete_a_task(fetch):
    task = submit(fetch)
    refused = fetch("tasks", task["id"], method="DELETE")
    assert refused.code == 409 and "cancel it before deleting it" in body(refused)["message"]
    cancelled = fetch("tasks", "cancel", method="POST", body=json.dumps({"task_ids": [task["id"], "nope"]}))
    assert body(cancelled) == {"cancelled": [task["id"]], "not_cancelled": [{"id": "nope", "reason": "no such task"}]}
    assert body(fetch("tasks", task["id"]))["status"] == "CANCELLED"
    assert fetch("tasks", "cancel", method="POST", body=json.dumps({"ids": []})).code == 400
    assert fetch("tasks", task["id"], method="DELETE").code == 204
    assert fetch("tasks", task["id"]).code == 404
    assert body(fetch("tasks"))["total"] == 0


@pytest.mark.parametrize("credentials", [{"Authorization": ""}, {"Authorization": "token wrong-token"}],
                         ids=["no-token", "wrong-token"])
def test_no_or_a_wrong_token_is_refused_and_changes_nothing(fetch, credentials):
    task = submit(fetch)
    for method, path, payload in [("GET", ("tasks",), None), ("GET", ("stats",), None),
                                  ("POST", ("tasks",), dumps_call(double, (1,))),
                                  ("POST", ("tasks", "cancel"), json.dumps({"task_ids": [task["id"]]})),
                                  ("DELETE", ("tasks", task["id"]), None)]:
        response = fetch(*path, method=method, body=payload, headers={**OCTET, **credentials},
                         allow_nonstandard_methods=True)
        assert response.code in (401, 403), (method, path, response.code)
    tasks = body(fetch("tasks"))
    assert tasks["total"] == 1 and tasks["tasks"][0]["status"] == "PENDING"


def test_a_login_cookie_reads_but_writes_only_with_the_xsrf_token(fetch, jp_serverapp):
    token = jp_serverapp.identity_provider.token
    login = fetch("stats", params={"token": token}, headers={"Authorization": ""})
    assert login.code == 200
    cookie = "; ".join(c.split(";")[0] for c in login.headers.get_list("Set-Cookie"))
    assert cookie, "a token in the URL sets the login cookie"
    xsrf = "5e1f" * 8
    as_browser = {"Authorization": "", "Cookie": f"{cookie}; _xsrf={xsrf}"}
    assert fetch("stats", headers=as_browser).code == 200
    cancel = {"method": "POST", "body": json.dumps({"task_ids": []})}
    assert fetch("tasks", "cancel", headers=as_browser, **cancel).code == 403
    assert fetch("tasks", "cancel", headers={**as_browser, "X-XSRFToken": xsrf}, **cancel).code == 200


def test_bulk_results_answer_each_id_in_order(fetch, service):
    done, cancelled, waiting = submit(fetch), submit(fetch), submit(fetch)
    finish(service, done["id"], [1, 2, 3])
    fetch("tasks", "cancel", method="POST", body=json.dumps({"task_ids": [cancelled["id"]]}))
    ids = [waiting["id"], done["id"], "unknown", cancelled["id"]]
    response = fetch("tasks", "results", method="POST", body=json.dumps({"task_ids": ids}))
    assert response.code == 200 and response.headers["Content-Type"] == batchstream.CONTENT_TYPE
    frames = list(batchstream.read_frames(io.BytesIO(response.body)))
    assert [(head["id"], head["kind"]) for head, _ in frames] == [
        (waiting["id"], "pending"), (done["id"], "result"), ("unknown", "none"), (cancelled["id"], "none")]
    assert pickling.loads(frames[1][1]) == [1, 2, 3]
    assert frames[3][0]["task"]["status"] == "CANCELLED"
    too_many = fetch("tasks", "results", method="POST", body=json.dumps({"task_ids": ["x"] * 1001}))
    assert too_many.code == 400 and "at most 1000" in body(too_many)["message"]
    result = fetch("tasks", done["id"], "result")
    assert result.code == 200 and pickling.loads(result.body) == [1, 2, 3]
    assert fetch("tasks", waiting["id"], "result").code == 409


def test_the_change_feed_names_what_changed_and_a_long_poll_answers_on_a_change(fetch, jp_fetch, jp_asyncio_loop):
    cursor = body(fetch("changes"))["cursor"]
    task = submit(fetch)
    answer = body(fetch("changes", params={"since": cursor}))
    assert task["id"] in answer["changed"]

    async def poll_while_cancelling():
        poll = asyncio.ensure_future(jp_fetch(API, "changes", params={"since": answer["cursor"], "wait": "60"}))
        await asyncio.sleep(0.2)  # the poll is waiting (it would answer the change at once anyway)
        assert not poll.done(), "nothing changed yet: the poll waits"
        await jp_fetch(API, "tasks", "cancel", method="POST", body=json.dumps({"task_ids": [task["id"]]}))
        return await asyncio.wait_for(poll, 30)

    started = time.monotonic()
    polled = jp_asyncio_loop.run_until_complete(poll_while_cancelling())
    assert task["id"] in body(polled)["changed"]
    assert time.monotonic() - started < 30, "answered on the change, not at its 60 s wait"


def test_stats_count_tasks_and_show_no_workers(fetch):
    submit(fetch), submit(fetch)
    cancelled = submit(fetch)
    fetch("tasks", "cancel", method="POST", body=json.dumps({"task_ids": [cancelled["id"]]}))
    stats = body(fetch("stats"))
    assert stats["counts"].get("PENDING") == 2 and stats["counts"].get("CANCELLED") == 1
    assert sum(stats["queue_depth"].values()) == 2
    assert stats["workers"] == [] and stats["launcher"] is None
