"""Fault suite for uploads and downloads (issue 12, item 7), against a real server.

Limits hold for every way in (one task, a JSON batch, a streamed batch, a shared part) and
are answered with a 413 whose JSON names the limit, the size and the option that raises
it, never a reset connection. Downloads check the Origin like every other endpoint, serve
names with ``%XX`` in them, never follow a link a task planted, and output folders are 0700.
"""

from __future__ import annotations

import base64
import os
import stat

import pytest
import requests

from conftest import TOKEN, wait_for
from jupyter_taskq import batchstream
from jupyter_taskq.notebook.client import TaskqError
from jupyter_taskq.payload import dumps_call

AUTH = {"Authorization": f"token {TOKEN}"}
LIMIT = 100_000


@pytest.fixture(scope="module")
def small_limit(tmp_path_factory):
    from conftest import TaskqServer

    server = TaskqServer(tmp_path_factory.mktemp("limit"), gpus=[], cpu_workers=1, max_payload_size=LIMIT).start()
    yield server
    server.close()


def assert_refused_as_too_large(response: requests.Response, size_hint: int | None = None) -> None:
    assert response.status_code == 413, (response.status_code, response.text[:300])
    body = response.json()
    assert body["reason"] == "payload too large"
    assert f"{LIMIT:,}" in body["message"] and "TaskQueue.max_payload_size" in body["message"]
    if size_hint is not None:
        assert f"{size_hint:,}" in body["message"]


def nothing_was_kept(server, before: int) -> None:
    assert server.client().list()["total"] == before
    wait_for(lambda: not any((server.state_dir / "spool").iterdir()), 5, 0.05, "an empty upload spool")


def test_every_way_in_holds_the_payload_limit_with_a_json_413(small_limit):
    api = small_limit.url + "taskq/api/"
    before = small_limit.client().list()["total"]
    big = dumps_call(len, (b"x" * (2 * LIMIT),))
    octet = {**AUTH, "Content-Type": "application/octet-stream"}

    assert_refused_as_too_large(requests.post(api + "tasks", data=big, headers=octet), len(big))
    # Chunked (no declared size): counted as it arrives, still answered, not reset.
    assert_refused_as_too_large(requests.post(api + "tasks", data=iter([big[:50_000], big[50_000:]]), headers=octet))
    encoded = base64.b64encode(big).decode()
    assert_refused_as_too_large(requests.post(api + "tasks", json={"payload": encoded}, headers=AUTH))
    small = base64.b64encode(dumps_call(len, ([1],))).decode()
    batch = {"tasks": [{"payload": small}, {"payload": encoded}]}
    refused = requests.post(api + "tasks/batch", json=batch, headers=AUTH)
    assert_refused_as_too_large(refused)
    assert "tasks[1]" in refused.json()["message"]
    stream = b"".join(batchstream.frames([({}, dumps_call(len, ([1],))), ({}, big)]))
    refused = requests.post(api + "tasks/batch", data=stream,
                            headers={**AUTH, "Content-Type": batchstream.CONTENT_TYPE})
    assert_refused_as_too_large(refused, len(big))
    assert "tasks[1]" in refused.json()["message"]
    nothing_was_kept(small_limit, before)

    client = small_limit.client()
    with pytest.raises(TaskqError) as one:
        client.submit(len, (b"x" * (2 * LIMIT),))
    with pytest.raises(TaskqError) as many:
        client.submit_many(len, [b"x", b"x" * (2 * LIMIT)])
    for refused in (one.value, many.value):
        assert refused.status_code == 413 and "TaskQueue.max_payload_size" in str(refused)
    nothing_was_kept(small_limit, before)
    assert client.submit(len, ([1, 2],)).result(timeout=30) == 2, "the server still takes what fits"


def write_outputs(folder: str, names: list[str]) -> list[str]:
    from jupyter_taskq import Output

    saved = []
    for name in names:
        path = os.path.join(folder, name)
        with open(path, "w") as f:
            f.write(f"content of {name}")
        saved.append(Output(path).save())
    return saved


def test_output_names_with_percent_escapes_download_from_their_advertised_url(shared_server, tmp_path):
    client = shared_server.client()
    names = ["a%20b.txt", "100%.txt", "plain name.txt"]
    handle = client.submit(write_outputs, (str(tmp_path), names))
    assert handle.result(timeout=30) == names
    outputs = {o["name"]: o for o in client.get(handle.id)["outputs"]}
    for name in names:
        response = requests.get(shared_server.url.rstrip("/") + outputs[name]["url"], headers=AUTH)
        assert response.status_code == 200, (name, response.status_code)
        assert response.content == f"content of {name}".encode()
        target = client.download(handle.id, name, tmp_path / "down")
        assert open(target).read() == f"content of {name}"


def test_output_folders_are_user_only(shared_server, tmp_path):
    handle = shared_server.client().submit(write_outputs, (str(tmp_path), ["m.txt"]))
    handle.result(timeout=30)
    attempt = shared_server.client().get(handle.id)["attempt"]
    task_dir = shared_server.state_dir / "outputs" / handle.id
    for folder in (task_dir, task_dir / str(attempt), task_dir / str(attempt) / "files"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_downloads_check_the_origin_like_every_other_endpoint(shared_server, tmp_path):
    handle = shared_server.client().submit(write_outputs, (str(tmp_path), ["o.txt"]))
    handle.result(timeout=30)
    session = requests.Session()
    assert session.get(shared_server.url + f"lab?token={TOKEN}").status_code == 200  # login cookie
    api = shared_server.url + "taskq/api/"
    url = api + f"tasks/{handle.id}/outputs/o.txt"
    assert session.get(url).status_code == 200
    assert session.get(url, headers={"Origin": shared_server.url.rstrip("/")}).status_code == 200
    evil = {"Origin": "http://evil.example.com"}
    assert session.get(api + "stats", headers=evil).status_code == 404  # what every API endpoint does
    refused = session.get(url, headers=evil)
    assert refused.status_code == 404 and b"content of" not in refused.content
    assert session.head(url, headers=evil).status_code == 404


def test_a_refused_request_never_breaks_the_clients_next_one(shared_server):
    """A request refused before its body is read (a foreign Origin here; no login and someone else's
    task alike) ends its connection: the answer says so (Connection: close), so a client that keeps
    connections open (requests, the kernel's client, a hub user's forwarding server) opens a new one
    instead of writing into a closing socket and reading a reset."""
    session = requests.Session()
    assert session.get(shared_server.url + f"lab?token={TOKEN}").status_code == 200  # login cookie
    stats = shared_server.url + "taskq/api/stats"
    evil = {"Origin": "http://evil.example.com"}
    for _ in range(150):
        refused = session.get(stats, headers=evil)
        assert refused.status_code == 404 and refused.headers.get("Connection") == "close"
        assert session.head(stats, headers=evil).status_code == 404
        answered = session.get(stats)
        assert answered.status_code == 200 and answered.headers.get("Connection") != "close", "kept alive"


def save_then_swap(folder: str, secret: str, how: str) -> str:
    """A task that registers an honest output, then swaps what it points at for a link to elsewhere."""
    import shutil

    name = write_outputs(folder, ["report.txt"])[0]
    attempt = os.environ["JUPYTER_TASKQ_ATTEMPT_DIR"]
    files = os.path.join(attempt, "files")
    if how == "files folder":
        shutil.rmtree(files)
        os.symlink(secret, files)
    elif how == "file":
        os.unlink(os.path.join(files, name))
        os.symlink(os.path.join(secret, "report.txt"), os.path.join(files, name))
    elif how == "fifo":
        os.unlink(os.path.join(files, name))
        os.mkfifo(os.path.join(files, name))
    return name


@pytest.mark.parametrize("how", ["files folder", "file", "fifo"])
def test_a_task_that_swaps_its_outputs_for_links_gets_nothing_served(shared_server, tmp_path, how):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "report.txt").write_text("SECRET: not an output of any task")
    client = shared_server.client()
    handle = client.submit(save_then_swap, (str(tmp_path), str(secret), how))
    assert handle.result(timeout=30) == "report.txt"
    response = requests.get(shared_server.url + f"taskq/api/tasks/{handle.id}/outputs/report.txt", headers=AUTH)
    assert response.status_code == 403, (response.status_code, response.text[:200])
    assert b"SECRET" not in response.content
    assert "not a regular file" in response.json()["message"]


def test_a_json_body_over_its_limit_says_how_to_send_instead(small_limit):
    """JSON (base64) bodies have a fixed cap; the answer names it and the streamed ways that have none."""
    from jupyter_taskq.server.handlers.tasks import MAX_JSON_BODY

    api = small_limit.url + "taskq/api/"
    before = small_limit.client().list()["total"]
    body = b" " * (MAX_JSON_BODY + 1)
    json_type = {**AUTH, "Content-Type": "application/json"}
    for data in (body, iter([body[:MAX_JSON_BODY // 2], body[MAX_JSON_BODY // 2:]])):  # declared, then chunked
        refused = requests.post(api + "tasks", data=data, headers=json_type)
        assert refused.status_code == 413, refused.text[:200]
        message = refused.json()["message"]
        assert f"{MAX_JSON_BODY:,}" in message and "application/octet-stream" in message
    nothing_was_kept(small_limit, before)


def swap_log_for(secret: str, kind: str) -> str:
    """A task that replaces its own log (in its attempt folder) with a link to someone's file, or a FIFO."""
    import os

    log = os.path.join(os.environ["JUPYTER_TASKQ_ATTEMPT_DIR"], "log")
    print("before the swap", flush=True)
    os.remove(log)
    if kind == "link":
        os.symlink(secret, log)
    else:
        os.mkfifo(log)
    return "swapped"


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_a_log_swapped_for_a_link_or_fifo_reads_as_empty_never_the_target(shared_server, tmp_path, kind):
    """With tasks running as their owners, root reads an attempt folder the owner controls: the log
    reader opens only regular files (no link is followed, no FIFO blocks the server)."""
    secret = tmp_path / "someone-elses-secret"
    secret.write_text("TOP SECRET\n" * 10)
    client = shared_server.client()
    handle = client.submit(swap_log_for, (str(secret), kind))
    assert handle.result(timeout=30) == "swapped"
    chunk = client.logs(handle.id)
    assert "TOP SECRET" not in chunk["data"]
    assert client.get(handle.id)["status"] == "COMPLETE"
    assert client.stats()["workers"], "the server still answers"
