"""Bad input gets a clear 4xx JSON error, and the server (and its workers) keep working."""

from __future__ import annotations

import json

import pytest
import requests

from conftest import TOKEN, wait_for
from jupyter_taskq.payload import dumps_call

AUTH = {"Authorization": f"token {TOKEN}"}


def double(x):
    return 2 * x


def api(shared_server, path):
    return shared_server.url + "taskq/api/" + path


def post_payload(shared_server, data, **params):
    return requests.post(api(shared_server, "tasks"), data=data, params=params,
                         headers={**AUTH, "Content-Type": "application/octet-stream"})


@pytest.mark.parametrize(
    "params, message",
    [
        ({"timeout": "-5"}, "'timeout' must be a number between 0.001 and 31536000 seconds"),
        ({"timeout": "soon"}, "'timeout' must be a number"),
        ({"max_retries": "-1"}, "'max_retries' must be between 0 and 100"),
        ({"priority": "high"}, "'priority' must be an integer"),
        ({"colour": "red"}, "unknown option(s) 'colour'"),
        ({"gpu": "3"}, "no live machine has 3 GPUs for one task"),  # the shared server has gpus=[0, 1]
        ({"gpu": "65"}, "option 'gpu' must be 0, a number of GPUs up to 64"),
        ({"gpu": "A100:0"}, "\"MODEL:N\""),
        ({"callback_url": "ftp://x"}, "'callback_url' must be an http"),
        ({"retry_backoff": "0.5"}, "'retry_backoff' must be a number between 1 and 100"),
        # Issue 12: no number that is not finite, nor one a date or a sleep cannot hold.
        ({"expires": "1e12"}, "'expires' must be a number between 0.001 and 31536000 seconds"),
        ({"expires": "inf"}, "'expires' must be a number between 0.001 and 31536000 seconds"),
        ({"timeout": "inf"}, "'timeout' must be a number between 0.001 and 31536000 seconds"),
        ({"timeout": "nan"}, "'timeout' must be a number between 0.001 and 31536000 seconds"),
        ({"timeout": "1e400"}, "'timeout' must be a number between 0.001 and 31536000 seconds"),
        ({"result_ttl": "inf"}, "'result_ttl' must be a number between 0 and 31536000 seconds"),
        ({"retry_delay": "1e12"}, "'retry_delay' must be a number between 0 and 604800 seconds"),
        ({"retry_delay": "3600", "retry_backoff": "100", "max_retries": "50"}, "must be at most 2592000 s"),
        ({"priority": "1e400"}, "'priority' must be an integer between -1000000 and 1000000"),
        ({"cpu": "0"}, "'cpu' must be a number between 0.01 and 4096"),
        ({"cpu": "100000"}, "'cpu' must be a number between 0.01 and 4096"),
        ({"cpu": "64"}, "no live worker's machine can meet cpu=64; the machines there are:"),
        ({"memory": "lots"}, "'memory' must be between 1 and 67108864 MiB"),
        ({"memory": "64T"}, "no live worker's machine can meet memory=67108864 MiB"),
        ({"keep_warm_seconds": "-1"}, "'keep_warm_seconds' must be a number between 0 and 604800 seconds"),
        ({"retry_for": "not a name"}, "'retry_for': 'not a name' is not an exception type"),
        ({"on_start": "f"}, "unknown option(s) 'on_start'"),
    ],
)
def test_bad_options_are_refused_with_a_message(shared_server, params, message):
    response = post_payload(shared_server, dumps_call(double, (1,)), **params)
    assert response.status_code == 400
    assert message in response.json()["message"]


def test_payload_that_is_not_ours_is_refused(shared_server):
    response = post_payload(shared_server, b"\x80\x04garbage that is not a payload")
    assert response.status_code == 400
    assert "not a jupyter-taskq payload" in response.json()["message"]
    assert not any((shared_server.state_dir / "payloads").iterdir())
    assert not any((shared_server.state_dir / "spool").iterdir())


def test_malformed_json_and_wrong_content_type(shared_server):
    bad_json = requests.post(api(shared_server, "tasks"), data=b"{not json",
                             headers={**AUTH, "Content-Type": "application/json"})
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["message"]
    no_payload = requests.post(api(shared_server, "tasks"), json={"name": "x"}, headers=AUTH)
    assert no_payload.status_code == 400 and "'payload'" in no_payload.json()["message"]
    not_base64 = requests.post(api(shared_server, "tasks"), json={"payload": "%%%"}, headers=AUTH)
    assert not_base64.status_code == 400 and "base64" in not_base64.json()["message"]
    form = requests.post(api(shared_server, "tasks"), data={"a": "b"}, headers=AUTH)
    assert form.status_code == 415 and "application/octet-stream" in form.json()["message"]


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("GET", "tasks/no-such-id", None, 404),
        ("GET", "tasks/no-such-id/result", None, 404),
        ("GET", "tasks/no-such-id/exception", None, 404),
        ("POST", "tasks/no-such-id/retry", None, 404),
        ("DELETE", "tasks/no-such-id", None, 404),
        ("GET", "tasks?status=DONE", None, 400),
        ("GET", "tasks?limit=many", None, 400),
        ("GET", "tasks?limit=0", None, 400),
        ("GET", f"tasks?offset={2**63}", None, 400),
        ("GET", f"tasks?offset={2**64 + 5}", None, 400),
        ("GET", "tasks?limit=1001", None, 400),
        ("GET", f"tasks/no-such-id/logs?offset={2**63}", None, 404),
        ("GET", "tasks/no-such-id?wait=forever", None, 400),
        ("POST", "tasks/cancel", {"task_ids": "abc"}, 400),
        ("POST", "tasks/cancel", {}, 400),
        ("POST", "tasks/wait", {"task_ids": ["a"], "timeout": -1}, 400),
        ("POST", "tasks/batch", {"tasks": []}, 400),
        ("POST", "tasks/batch", {"tasks": [{"payload": "AAAA", "timeout": 0}]}, 400),
    ],
)
def test_bad_requests_get_json_errors(shared_server, method, path, body, status):
    response = requests.request(method, api(shared_server, path), json=body, headers=AUTH)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["message"]


def test_result_is_409_until_complete(shared_server, tmp_path):
    client = shared_server.client()
    handle = client.submit(double, (4,), timeout=30)
    assert handle.result(timeout=20) == 8
    failing = client.submit(_raise, max_retries=0)
    client.wait([failing.id], timeout=20)
    response = requests.get(api(shared_server, f"tasks/{failing.id}/result"), headers=AUTH)
    assert response.status_code == 409 and "FAILED" in response.json()["message"]


def _raise():
    raise KeyError("nope")


def test_server_and_workers_survive_all_of_it(shared_server):
    for data in (b"", b"JTQPAY1\n\xff\xff\xff\xff", b"JTQPAY1\n\x00\x00\x00\x02{}", b"x" * 100_000):
        assert post_payload(shared_server, data).status_code == 400
    # a payload whose header is fine but whose body is not dill: that attempt fails, nothing crashes
    from jupyter_taskq.payload import calling_context, encode

    response = post_payload(shared_server, encode(calling_context(), b"not dill at all"), max_retries="0")
    assert response.status_code == 201
    client = shared_server.client()
    client.wait([response.json()["id"]], timeout=20)
    assert client.get(response.json()["id"])["status"] == "FAILED"
    assert client.submit(double, (21,)).result(timeout=20) == 42
    assert all(w["alive"] for w in client.stats()["workers"])


def test_bad_rows_already_in_the_store_never_stop_the_server(make_server):
    """Issue 12: rows written before the checks existed (or by hand) are FAILED with a reason at start-up or by
    the recovery sweep, each logged once; the server starts, its workers run, the JSON stays strict."""
    import json
    import sqlite3
    import time
    import uuid

    server = make_server(cpu_workers=1)
    server.stop()
    now = time.time()
    bad = {
        "expires": dict(status="PENDING", expires=1e12, expires_at=now + 1e12),
        "retry_delay": dict(status="RETRY", retry_delay=1e12, attempt=1),
        "timeout": dict(status="PENDING", timeout=float("inf")),
        "result_ttl": dict(status="PENDING", result_ttl=float("inf"), priority=10 ** 15),  # SQLite keeps no NaN
        "running": dict(status="RUNNING", retry_delay=float("inf"), attempt=1, worker="gone",
                        worker_instance="gone:1", started_at=now - 60),
    }
    ids = {}
    with sqlite3.connect(server.state_dir / "taskq.db") as db:
        for label, fields in bad.items():
            ids[label] = str(uuid.uuid4())
            row = dict(id=ids[label], name=f"bad-{label}", pool="cpu", created_at=now, updated_at=now, **fields)
            db.execute(f"insert into taskq_tasks ({', '.join(row)}) values ({', '.join('?' * len(row))})",
                       list(row.values()))
    server.start()
    client = server.client()
    assert client.submit(double, (21,)).result(timeout=30) == 42  # workers run

    def all_failed():
        tasks = {t["id"]: t for t in client.tasks_by_id(list(ids.values()))}
        return tasks if all(t["status"] == "FAILED" for t in tasks.values()) else None

    tasks = wait_for(all_failed, 30, 0.2, "the bad rows to be FAILED")
    for label, task_id in ids.items():
        message = tasks[task_id]["error"]["message"]
        assert message.startswith("the stored task cannot be run:"), (label, message)
    assert "'expires'" in tasks[ids["expires"]]["error"]["message"]
    assert "'retry_delay'" in tasks[ids["retry_delay"]]["error"]["message"]
    text = requests.get(api(server, "tasks?limit=100"), headers=AUTH).text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in GET tasks"))
    log = server.log_path.read_text()
    for task_id in ids.values():
        assert log.count(f"task {task_id} cannot be run") == 1  # logged once


BODY_LIMIT = 200_000  # the test server's ServerApp.max_body_size (Jupyter's default is 512 MB)


@pytest.fixture(scope="module")
def small_body_limit(tmp_path_factory):
    from conftest import TaskqServer

    server = TaskqServer(tmp_path_factory.mktemp("body-limit"), cpu_workers=1,
                         extra_args=[f"--ServerApp.max_body_size={BODY_LIMIT}"]).start()
    yield server
    server.close()


def json_padded_to(size: int, value: dict) -> bytes:
    """``value`` as JSON, padded with spaces to ``size`` bytes: a valid body of any size."""
    text = json.dumps(value).encode()
    return text + b" " * (size - len(text))


def test_a_body_over_jupyters_limit_gets_a_json_413_everywhere_and_loses_nothing(small_body_limit):
    """Tornado answers a body over ServerApp.max_body_size with a bare 400 and a closed connection;
    every taskq endpoint answers a JSON 413 naming the limit and the option, and does nothing."""
    server = small_body_limit
    client = server.client()
    done = client.submit(double, (3,))
    assert done.result(timeout=30) == 6
    failed = client.submit(_raise, max_retries=0)
    client.wait([failed.id], timeout=30)
    before = client.list()["total"]
    ids = {"task_ids": [done.id, failed.id]}
    cases = [
        ("POST", "tasks/cancel", ids),
        ("POST", "tasks/wait", {**ids, "timeout": 0}),
        ("POST", "groups", ids),
        ("POST", f"tasks/{failed.id}/retry", {}),
        ("DELETE", f"tasks/{done.id}", {}),
        ("GET", "stats", {}),
        ("GET", f"tasks/{done.id}", {}),
        ("GET", "tasks", {}),  # a streamed endpoint (POST), whose other methods hold bodies to Jupyter's limit
    ]
    size = 2 * BODY_LIMIT
    for method, path, value in cases:
        body = json_padded_to(size, value)
        for data, declared in ((body, True), (iter([body[:size // 2], body[size // 2:]]), False)):  # then chunked
            response = requests.request(method, api(server, path), data=data,
                                         headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
            where = f"{method} {path} ({'declared' if declared else 'chunked'})"
            assert response.status_code == 413, (where, response.status_code, response.text[:300])
            assert response.headers["Content-Type"].startswith("application/json"), where
            message = response.json()["message"]
            assert f"{BODY_LIMIT:,}" in message and "ServerApp.max_body_size" in message, (where, message)
            assert f"{size:,}" in message or not declared, (where, message)

    assert client.list()["total"] == before, "no task was retried"
    assert client.get(done.id)["status"] == "COMPLETE", "nothing was deleted or cancelled"
    assert client.get(failed.id)["status"] == "FAILED"
    wait_for(lambda: not any((server.state_dir / "spool").iterdir()), 5, 0.05, "an empty upload spool")

    # A body under the limit still arrives whole, padding and all.
    fits = requests.post(api(server, "tasks/wait"), data=json_padded_to(BODY_LIMIT, {**ids, "timeout": 0}),
                         headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    assert fits.status_code == 200 and fits.json()["done"], fits.text[:300]
    group = requests.post(api(server, "groups"), data=json_padded_to(BODY_LIMIT // 2, ids),
                          headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    assert group.status_code == 201 and group.json()["count"] == 2, group.text[:300]
    # Uploads stream to their own limits (TaskQueue.max_payload_size), not Jupyter's: a payload
    # bigger than max_body_size is taken.
    assert client.submit(len, (b"x" * (2 * BODY_LIMIT),)).result(timeout=30) == 2 * BODY_LIMIT
