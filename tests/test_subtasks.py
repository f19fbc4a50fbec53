"""Tasks that submit tasks (issue 19): in a task, a bare ``f.put()`` and ``jupyter_taskq.connect()`` reach
the queue as the task's owner with a token of that attempt's own (jupyter_taskq/tasktokens.py), which
opens the taskq API only, is never written into a payload, log or task JSON, and is refused once the
attempt has ended."""

from __future__ import annotations

import pytest
import requests

from jupyter_taskq import task_queue
from jupyter_taskq.notebook import client as client_module

from conftest import wait_for


@task_queue()
def square(x):
    return x * x


def fan_out(values, token_file):
    """Puts a subtask per value and returns their results; notes what its token may and may not open."""
    import os

    import requests

    import jupyter_taskq

    token, url = os.environ["JUPYTER_TASKQ_TOKEN"], os.environ["JUPYTER_TASKQ_URL"]
    with open(token_file, "w") as f:  # for the test only: not the state directory, not the log
        f.write(token)
    handles = [square.put(v) for v in values]
    headers = {"Authorization": f"token {token}"}
    elsewhere = {path: requests.get(url + path, headers=headers, timeout=10).status_code
                 for path in ("api/contents", "api/kernels", "api/sessions")}
    print("fan-out of", len(handles), "subtasks")
    return {"results": [h.result(timeout=60) for h in handles], "ids": [h.id for h in handles],
            "stats": sorted(jupyter_taskq.connect().stats()), "elsewhere": elsewhere, "pid": os.getpid()}


def test_a_task_fans_out_as_its_owner_and_its_token_ends_with_it(shared_server, tmp_path):
    client = shared_server.client()
    token_file = tmp_path / "token"
    parent = client.submit(fan_out, ([3, 4], str(token_file)))
    answer = parent.result(timeout=90)
    assert answer["results"] == [9, 16]
    assert "workers" in answer["stats"]
    assert set(answer["elsewhere"].values()) <= {401, 403}, answer["elsewhere"]  # the taskq API only
    owner = client.get(parent.id)["owner"]
    assert owner and [client.get(i)["owner"] for i in answer["ids"]] == [owner, owner]

    token = token_file.read_text()
    assert token.startswith("jtqt_")
    headers = {"Authorization": f"token {token}"}
    wait_for(lambda: client.get(parent.id)["status"] == "COMPLETE", 30, message="the parent task's end")
    for method, path in (("GET", "stats"), ("POST", "tasks/cancel"), ("GET", f"tasks/{parent.id}")):
        refused = requests.request(method, shared_server.url + "taskq/api/" + path, headers=headers,
                                   json={"task_ids": []}, timeout=10)
        assert refused.status_code == 403, (path, refused.status_code, refused.text)
        assert "ended" in refused.json()["message"]

    assert token not in parent.logs() and "fan-out of 2 subtasks" in parent.logs()
    assert token not in str(client.get(parent.id)) + str(client.attempts(parent.id))
    for path in shared_server.state_dir.rglob("*"):  # payloads, logs, the database: no copy anywhere
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_a_warm_task_process_uses_each_attempts_own_token(make_server, tmp_path):
    """A warm process runs attempt after attempt: each connects with its own token, not the last one's.

    A warm process lives in one worker and nothing routes a task to the worker holding it (warm keys are
    per worker: worker/process.py), so reuse is made certain as tests/test_warm.py does, by one worker for
    the parent: it asks for a GPU on a server with a single (listed, not real) GPU, and its subtasks run on
    the single CPU worker (a parent on the CPU pool would hold the only worker its subtasks need)."""
    client = make_server(gpus=[0], cpu_workers=1).client()
    first = client.submit(fan_out, ([1], str(tmp_path / "first")), gpu=1, keep_warm_seconds=60).result(timeout=90)
    second = client.submit(fan_out, ([2], str(tmp_path / "second")), gpu=1, keep_warm_seconds=60).result(timeout=90)
    assert (first["results"], second["results"]) == ([1], [4])
    assert first["pid"] == second["pid"]  # the same process
    assert (tmp_path / "first").read_text() != (tmp_path / "second").read_text()


def test_a_made_up_task_token_is_refused(shared_server):
    answer = requests.get(shared_server.url + "taskq/api/stats", timeout=10,
                          headers={"Authorization": "token jtqt_" + "x" * 43})
    assert answer.status_code == 403 and "task token" in answer.json()["message"]


def test_in_a_task_without_the_servers_url_connect_says_why(monkeypatch):
    """A worker that was not told the server's URL (another machine, no --server-url) gives its tasks none."""
    monkeypatch.setenv("JUPYTER_TASKQ_IN_TASK", "1")
    monkeypatch.delenv("JUPYTER_TASKQ_URL", raising=False)
    monkeypatch.delenv("JUPYTER_TASKQ_TOKEN", raising=False)
    monkeypatch.setattr(client_module, "_default_client", None)
    with pytest.raises(RuntimeError, match="--server-url"):
        client_module.connect()
