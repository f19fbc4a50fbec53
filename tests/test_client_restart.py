"""The kernel's client rides out a server restart: a blocked ``result()``/``wait()`` keeps waiting and
returns once the server is back, it says so in one line, and a submission is never sent twice."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from conftest import wait_for
from jupyter_taskq.notebook.client import Client

MESSAGE = "jupyter-taskq: server unreachable, retrying for up to 60 s"


def _hold(gate: str) -> str:
    import os
    import time

    while not os.path.exists(gate):
        time.sleep(0.02)
    return "released"


def _in_thread(fn):
    """Run ``fn`` in a thread; the returned dict gets 'value' or 'error' when it ends."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    out["thread"] = thread
    return out


def test_blocked_result_and_wait_survive_a_server_restart(make_server, tmp_path, capfd):
    server = make_server(cpu_workers=1)
    client = server.client()
    gate = tmp_path / "gate"
    task = client.submit(_hold, (str(gate),), max_retries=2)
    wait_for(lambda: client.get(task.id)["status"] == "RUNNING", message="the task running")
    result = _in_thread(lambda: client.result(task.id))
    waited = _in_thread(lambda: client.wait([task.id])[0]["status"])
    # Whether they are inside their long polls or not yet sent when the server goes, both wait it out.
    server.stop()
    wait_for(lambda: MESSAGE in capfd.readouterr().err, message="the one-line notice")
    # Sent while the server is down: refused at connect, so sent again once it is back, exactly once.
    submitted = _in_thread(lambda: client.submit(_hold, (str(gate),), name="while-down").id)
    assert result["thread"].is_alive() and waited["thread"].is_alive(), (  # waiting, not dead
        result.get("error"), waited.get("error"))

    gate.touch()
    server.start()
    for call in (result, waited, submitted):
        call["thread"].join(60)
        assert not call["thread"].is_alive() and "error" not in call, call.get("error")
    assert result["value"] == "released" and waited["value"] == "COMPLETE"
    assert client.result(submitted["value"], timeout=60) == "released"
    assert [t["name"] for t in client.list(limit=10)["tasks"]].count("while-down") == 1
    assert MESSAGE not in capfd.readouterr().err  # said once per outage, not once per call


def test_retry_time_is_configurable_and_zero_fails_at_once(make_server, monkeypatch):
    server = make_server(cpu_workers=1)
    server.stop()
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError) as failed:
        Client(server.url, reconnect_for=0).stats()
    assert time.monotonic() - started < 5
    monkeypatch.setenv("JUPYTER_TASKQ_RECONNECT_FOR", "0.5")
    with pytest.raises(requests.ConnectionError) as failed:
        Client(server.url).stats()
    assert "stayed unreachable for 0.5 s" in " ".join(failed.value.__notes__)
    monkeypatch.setenv("JUPYTER_TASKQ_RECONNECT_FOR", "soon")
    with pytest.raises(ValueError, match="JUPYTER_TASKQ_RECONNECT_FOR must be a number of seconds"):
        Client(server.url)


def test_a_submission_that_may_have_arrived_is_not_sent_again():
    """A peer that takes the request and drops the connection: the POST may have been queued, so it
    fails at once instead of being sent a second time; a read is sent again."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    requests_seen = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            requests_seen.append(conn.recv(65536).split(b" ", 1)[0])
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    client = Client(f"http://127.0.0.1:{port}/", reconnect_for=1)
    try:
        with pytest.raises(requests.ConnectionError):
            client.submit(abs, (-1,))
        assert requests_seen == [b"POST"]
        with pytest.raises(requests.ConnectionError):
            client.stats()
        assert requests_seen.count(b"GET") >= 2
    finally:
        listener.close()
