"""The server's event loop never waits on blocking work: while a payload is on its way to the object
store (held mid-upload by a real TCP proxy in front of moto's S3 server), `GET stats`, the task list
and a task still answer. (How fast they answer is measured in bench/bench_never_blocks.py.)"""

from __future__ import annotations

import socket
import threading

import pytest
import requests

from conftest import TOKEN, TaskqServer, free_port, wait_for
from test_object_store import BUCKET, s3  # noqa: F401 - the moto fixture

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"token {TOKEN}"}


class HoldingProxy:
    """Forwards TCP to ``target``; once ``hold_after`` bytes went upstream it stops forwarding
    upstream until :meth:`release`: an upload stuck mid-way, for as long as the test wants."""

    def __init__(self, target_port: int, hold_after: int):
        self.target_port = target_port
        self.hold_after = hold_after
        self.sent = 0
        self.holding = threading.Event()
        self.released = threading.Event()
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source, sink, upstream):
        try:
            while data := source.recv(65536):
                if upstream:
                    self.sent += len(data)
                    if self.sent > self.hold_after and not self.released.is_set():
                        self.holding.set()
                        self.released.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def release(self):
        self.released.set()

    def close(self):
        self.release()
        self._listener.close()


def test_stats_answer_while_an_upload_to_the_object_store_is_stuck(tmp_path, s3):  # noqa: F811
    endpoint, fs = s3
    proxy = HoldingProxy(int(endpoint.rsplit(":", 1)[1]), hold_after=4 * 1024 * 1024)
    server = TaskqServer(tmp_path, gpus=[], cpu_workers=1, backend="redis", start_workers=False,
                         files_dir=f"s3://{BUCKET}/queue",
                         files_options={"endpoint_url": f"http://127.0.0.1:{proxy.port}"})
    server.start(wait_workers=False)
    try:
        client = server.client()
        done = {}

        def upload():
            from jupyter_taskq.payload import dumps_call

            data = dumps_call(len, (b"x" * (24 * 1024 * 1024),), None)
            done["response"] = requests.post(server.url + "taskq/api/tasks", data=data, headers={
                **AUTH, "Content-Type": "application/octet-stream"}, params={"gpu": 0}, timeout=120)

        uploader = threading.Thread(target=upload)
        uploader.start()
        wait_for(proxy.holding.is_set, 60, 0.05, "the payload's upload to the object store to be under way")

        stats = requests.get(server.url + "taskq/api/stats", headers=AUTH, timeout=20)
        listing = requests.get(server.url + "taskq/api/tasks", headers=AUTH, timeout=20)
        assert stats.status_code == 200 and listing.status_code == 200
        assert uploader.is_alive() and "response" not in done  # the upload is still stuck: they did not wait for it

        proxy.release()
        uploader.join(120)
        assert done["response"].status_code == 201, done["response"].text
        task_id = done["response"].json()["id"]
        assert any(key.endswith(f"{task_id}.payload") for key in fs.find(f"{BUCKET}/queue"))
    finally:
        proxy.close()
        server.close()


@pytest.mark.parametrize("value", [
    [], [1], list(range(49)), list(range(50)), list(range(51)), list(range(1001)),
    {"tasks": [{"id": f"t{i}", "status": "PENDING", "outputs": [], "error": None} for i in range(2001)], "done": True},
    {"tasks": [], "done": False}, {"total": 3}, "text", None,
])
def test_a_big_answer_encoded_in_pieces_is_the_same_json(value):
    """A 20,000-task answer is encoded a slice at a time (server/jsonpieces.py) so the event loop gets
    the GIL in between; the client must read exactly what json.dumps would have written."""
    import json

    from jupyter_taskq.server.jsonpieces import dumps_in_pieces

    assert dumps_in_pieces(value) == json.dumps(value).encode()
    assert json.loads(dumps_in_pieces(value)) == value
