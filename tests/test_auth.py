"""Every endpoint goes through Jupyter's auth: no token, a wrong token, or a cookie without XSRF is refused."""

from __future__ import annotations

import pytest
import requests

from conftest import TOKEN
from jupyter_taskq.payload import dumps_call

ENDPOINTS = [
    ("GET", "tasks"),
    ("POST", "tasks"),
    ("POST", "tasks/batch"),
    ("POST", "tasks/cancel"),
    ("POST", "tasks/wait"),
    ("POST", "tasks/results"),
    ("GET", "tasks/{id}"),
    ("DELETE", "tasks/{id}"),
    ("POST", "tasks/{id}/retry"),
    ("GET", "tasks/{id}/result"),
    ("GET", "tasks/{id}/exception"),
    ("GET", "tasks/{id}/logs"),
    ("GET", "tasks/{id}/outputs/x.txt"),
    ("GET", "stats"),
    ("GET", "changes"),
    ("HEAD", "blobs/" + "0" * 64),
    ("PUT", "blobs/" + "0" * 64),
]


def write_output(directory):
    import os

    from jupyter_taskq import Output

    path = os.path.join(directory, "x.txt")
    with open(path, "w") as f:
        f.write("secret output")
    Output(path).save()
    return "secret result"


@pytest.fixture(scope="module")
def finished_task(shared_server, tmp_path_factory):
    handle = shared_server.client().submit(write_output, (str(tmp_path_factory.mktemp("out")),))
    assert handle.result(timeout=30) == "secret result"
    return handle.id


@pytest.mark.parametrize("credentials", [{}, {"Authorization": "token wrong-token"}], ids=["no-token", "wrong-token"])
@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_every_endpoint_refuses_bad_credentials(shared_server, finished_task, method, path, credentials):
    before = shared_server.client().list()["total"]
    body = dumps_call(len, ([1],))
    response = requests.request(method, shared_server.url + "taskq/api/" + path.format(id=finished_task),
                                data=body, headers={**credentials, "Content-Type": "application/octet-stream"},
                                allow_redirects=False)
    assert response.status_code in (401, 403), (response.status_code, response.text[:200])
    assert b"secret" not in response.content
    assert shared_server.client().list()["total"] == before  # nothing was queued, retried or deleted
    assert shared_server.client().get(finished_task)["status"] == "COMPLETE"


def test_a_streamed_upload_without_a_token_is_never_stored(shared_server):
    spool, payloads = shared_server.state_dir / "spool", shared_server.state_dir / "payloads"
    before = set(payloads.iterdir())
    response = requests.post(shared_server.url + "taskq/api/tasks", data=b"x" * (8 * 1024 * 1024),
                             headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 403
    assert not any(spool.iterdir())
    assert set(payloads.iterdir()) == before


def test_a_cookie_without_the_xsrf_token_is_refused(shared_server):
    session = requests.Session()
    login = session.get(shared_server.url + f"lab?token={TOKEN}")  # sets the login and _xsrf cookies
    assert login.status_code == 200 and session.cookies
    api = shared_server.url + "taskq/api/"
    assert session.get(api + "stats").status_code == 200  # reading with the cookie is fine
    refused = session.post(api + "tasks/cancel", json={"task_ids": []})
    assert refused.status_code == 403
    xsrf = session.cookies.get("_xsrf")
    allowed = session.post(api + "tasks/cancel", json={"task_ids": []}, headers={"X-XSRFToken": xsrf})
    assert allowed.status_code == 200
