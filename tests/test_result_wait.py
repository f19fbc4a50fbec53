"""Waiting for a result is not an error: the long-poll's "not yet" is a 202, not a 409 warning in the
server's log on every ``result()`` call."""

from __future__ import annotations

import requests

from conftest import TOKEN, wait_for

AUTH = {"Authorization": f"token {TOKEN}"}


def wait_for_file(path):
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.05)
    return "done"


def test_a_result_still_running_after_the_wait_is_a_202_and_no_warning(shared_server, tmp_path):
    client = shared_server.client()
    gate = tmp_path / "gate"
    handle = client.submit(wait_for_file, (str(gate),))
    wait_for(lambda: client.get(handle.id)["status"] == "RUNNING", 30, message="the task to run")
    url = shared_server.url + f"taskq/api/tasks/{handle.id}/result"
    response = requests.get(url, headers=AUTH, params={"wait": 0.3})
    assert response.status_code == 202 and response.json()["status"] == "RUNNING"
    assert requests.get(url, headers=AUTH).status_code == 409  # asked without waiting: still a conflict
    gate.touch()
    assert handle.result(timeout=30) == "done"
    log = shared_server.log_path.read_text()
    assert f"409 GET /taskq/api/tasks/{handle.id}/result?wait" not in log
    assert f"202 GET /taskq/api/tasks/{handle.id}/result?wait" not in log  # success-level: not logged as a warning
