"""Task I/O end to end: output files, live logs, progress, webhooks and TTL clean-up."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import TOKEN, free_port, wait_for

BACKENDS = ["sqlite", "redis"]  # the same behaviour on both queues

AUTH = {"Authorization": f"token {TOKEN}"}


def make_outputs(big_mb, folder):
    import os

    from jupyter_taskq import Output

    with open("big.bin", "wb") as f:
        block = os.urandom(1024 * 1024)
        for _ in range(big_mb):
            f.write(block)
    Output("big.bin").save()
    Output(folder).save()
    return "saved"


def outputs_per_attempt(marker):
    """First attempt saves first.txt and fails; the retry saves final.txt."""
    import os

    from jupyter_taskq import Output

    first = not os.path.exists(marker)
    open(marker, "a").close()
    name = "first.txt" if first else "final.txt"
    with open(name, "w") as f:
        f.write(name)
    Output(name).save()
    if first:
        raise RuntimeError("first attempt fails")
    return name


def plant_symlink():
    """A task that tries to get the server to serve a file outside its output store."""
    import json
    import os

    from jupyter_taskq import Output

    with open("ok.txt", "w") as f:
        f.write("fine")
    Output("ok.txt").save()
    store = os.environ["JUPYTER_TASKQ_ATTEMPT_DIR"]
    os.symlink("/etc/passwd", os.path.join(store, "files", "passwd"))
    with open(os.path.join(store, "manifest.jsonl"), "a") as f:  # forge a registration too
        f.write(json.dumps({"name": "passwd", "size": 1}) + "\n")
    return "planted"


def print_lines_then_wait(count, gate):
    import os
    import time

    for i in range(count):
        print(f"line {i}")
    while not os.path.exists(gate):
        time.sleep(0.01)
    return count


def print_bytes(megabytes):
    line = "x" * 99
    for i in range(megabytes * 10_000):
        print(line)
    print("the very last line")
    return megabytes


def progress_cost(n):
    import time

    from jupyter_taskq import progress

    start = time.perf_counter()
    total = 0
    for i in range(n):
        total += i
    plain = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(n):
        total += i
        progress(i + 1, n, "counting")
    reported = time.perf_counter() - start
    return {"plain": plain, "with_progress": reported}


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_a_200_mb_file_and_a_folder_round_trip_byte_identical(shared_server, tmp_path, monkeypatch):
    client = shared_server.client()
    work = tmp_path / "work"
    (work / "results" / "sub").mkdir(parents=True)
    (work / "results" / "a.txt").write_text("alpha")
    (work / "results" / "sub" / "b.bin").write_bytes(os.urandom(5000))
    monkeypatch.chdir(work)
    handle = client.submit(make_outputs, (200, "results"))
    assert handle.result(timeout=120) == "saved"
    outputs = {o["name"]: o for o in handle.outputs()}
    assert set(outputs) == {"big.bin", "results.zip"}
    assert outputs["big.bin"]["size"] == 200 * 1024 * 1024 and outputs["big.bin"]["expires_in"] > 0

    downloaded = handle.download("big.bin", tmp_path)
    assert sha256(downloaded) == sha256(work / "big.bin")
    response = requests.get(shared_server.url.rstrip("/") + outputs["big.bin"]["url"], headers=AUTH,
                            stream=True)
    assert response.headers["Content-Disposition"].endswith("big.bin")
    ranged = requests.get(shared_server.url.rstrip("/") + outputs["big.bin"]["url"],
                          headers={**AUTH, "Range": "bytes=1000-1999"})
    assert ranged.status_code == 206 and ranged.content == (work / "big.bin").read_bytes()[1000:2000]

    import zipfile

    archive = zipfile.ZipFile(handle.download("results.zip", tmp_path))
    assert archive.read("a.txt") == b"alpha"
    assert archive.read("sub/b.bin") == (work / "results" / "sub" / "b.bin").read_bytes()


def save_folder(folder):
    from jupyter_taskq import Output

    return Output(folder).save()


def test_a_saved_folder_downloads_by_its_own_name_and_by_its_zip_name(shared_server, tmp_path, monkeypatch):
    import zipfile

    (tmp_path / "work" / "plots").mkdir(parents=True)
    (tmp_path / "work" / "plots" / "p.txt").write_text("plot")
    monkeypatch.chdir(tmp_path / "work")
    handle = shared_server.client().submit(save_folder, ("plots",))
    assert handle.result(timeout=60) == "plots.zip"
    by_name = handle.download("plots", tmp_path / "a")
    assert by_name == str(tmp_path / "a" / "plots.zip")  # saved under the zip's name
    assert zipfile.ZipFile(by_name).read("p.txt") == b"plot"
    assert zipfile.ZipFile(handle.download("plots.zip", tmp_path / "b")).read("p.txt") == b"plot"
    url = shared_server.url + f"taskq/api/tasks/{handle.id}/outputs/"
    plain = requests.get(url + "plots", headers=AUTH)
    assert plain.status_code == 200 and plain.headers["Content-Disposition"].endswith("plots.zip")
    missing = requests.get(url + "nothing", headers=AUTH)
    assert missing.status_code == 404 and "plots.zip" in missing.json()["message"]  # what there is


def test_a_retried_task_shows_only_the_last_attempts_outputs(shared_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    handle = shared_server.client().submit(outputs_per_attempt, (str(tmp_path / "marker"),), max_retries=1)
    assert handle.result(timeout=60) == "final.txt"
    assert [o["name"] for o in handle.outputs()] == ["final.txt"]
    response = requests.get(shared_server.url + f"taskq/api/tasks/{handle.id}/outputs/first.txt", headers=AUTH)
    assert response.status_code == 404


@pytest.mark.parametrize("name", ["..%2F..%2Ftaskq.db", "%2Fetc%2Fpasswd", "%2E%2E", "passwd", "ok.txt%2F..%2F..%2Fx"])
def test_paths_outside_registered_outputs_are_refused(shared_server, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    handle = shared_server.client().submit(plant_symlink)
    assert handle.result(timeout=60) == "planted"
    base = shared_server.url + f"taskq/api/tasks/{handle.id}/outputs/"
    assert requests.get(base + "ok.txt", headers=AUTH).content == b"fine"
    response = requests.get(base + name, headers=AUTH)
    assert response.status_code in (403, 404), response.status_code
    assert b"root:" not in response.content


def test_logs_are_followed_live_with_offsets(shared_server, tmp_path):
    client = shared_server.client()
    gate = tmp_path / "gate"
    handle = client.submit(print_lines_then_wait, (10_000, str(gate)))
    text, offset = "", 0

    def caught_up():
        nonlocal text, offset
        chunk = client.logs(handle.id, offset)
        text += chunk["data"]
        offset = chunk["next_offset"]
        return text.endswith("line 9999\n")

    wait_for(caught_up, 30, message="all 10,000 lines while the task runs")
    assert client.get(handle.id)["status"] == "RUNNING"  # followed live, not after the fact
    assert text.splitlines() == [f"line {i}" for i in range(10_000)]
    gate.touch()
    assert handle.result(timeout=30) == 10_000


def test_a_log_over_its_cap_keeps_its_tail_and_says_so(make_server):
    server = make_server(gpus=[], cpu_workers=1, log_max_bytes=200_000)
    client = server.client()
    handle = client.submit(print_bytes, (3,))  # about 3 MB of output
    assert handle.result(timeout=60) == 3
    text = handle.logs()
    assert len(text) <= 300_000
    assert text.startswith("[jupyter-taskq: ") and "bytes of earlier output dropped" in text.splitlines()[0]
    assert text.endswith("the very last line\n")
    assert client.get(handle.id)["log"]["dropped"] > 2_500_000


def test_progress_is_cheap_in_a_tight_loop_and_the_last_value_shows(shared_server):
    handle = shared_server.client().submit(progress_cost, (1_000_000,))
    cost = handle.result(timeout=120)
    assert cost["with_progress"] >= 0  # the cost itself is measured in bench/, not asserted here
    progress = handle.progress()
    assert progress["done"] == 1_000_000 and progress["total"] == 1_000_000
    assert progress["fraction"] == 1.0 and progress["message"] == "counting"


class Receiver:
    """A tiny webhook receiver on 127.0.0.1 that can fail its first N requests."""

    def __init__(self, fail_first: int = 0):
        self.deliveries: list[dict] = []
        self.fail_first = fail_first
        self.calls = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls += 1
                if receiver.calls <= receiver.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.deliveries.append({"headers": dict(self.headers), "body": body})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def add(a, b):
    return a + b


def test_webhooks_deliver_once_signed_retry_and_do_not_block(shared_server):
    client = shared_server.client()
    secret = (shared_server.state_dir / "webhook_secret").read_text().strip()
    healthy, flaky = Receiver(), Receiver(fail_first=2)
    dead_url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    try:
        to_dead = client.submit(add, (0, 0), callback_url=dead_url)
        handles = [client.submit(add, (i, i), callback_url=healthy.url) for i in range(3)]
        flaky_handle = client.submit(add, (5, 5), callback_url=flaky.url)
        wait_for(lambda: len(healthy.deliveries) == 3, 15, message="three deliveries (the dead receiver holds nothing up)")
        wait_for(lambda: len(flaky.deliveries) == 1, 20, message="delivery on the third try")
        assert flaky.calls == 3

        for delivery in healthy.deliveries + flaky.deliveries:
            headers, body = delivery["headers"], delivery["body"]
            expected = hmac.new(secret.encode(), headers["X-Task-Timestamp"].encode() + b"." + body,
                                hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["X-Task-Signature"], expected)
            assert abs(int(headers["X-Task-Timestamp"]) - time.time()) < 60
            assert json.loads(body)["data"]["status"] == "COMPLETE"
        assert sorted(json.loads(d["body"])["data"]["id"] for d in healthy.deliveries) == sorted(h.id for h in handles)

        callback = client.get(flaky_handle.id)["callback"]
        assert [a["status_code"] for a in callback["attempts"]] == [503, 503, 200] and callback["delivered"]
        wait_for(lambda: len((client.get(to_dead.id)["callback"] or {}).get("attempts", [])) >= 2, 20,
                 message="the dead receiver retried")
        assert client.get(to_dead.id)["callback"]["delivered"] is False
        time.sleep(0)  # exactly once: nothing more arrives for the delivered tasks
        wait_for(lambda: all(client.get(h.id)["callback"]["delivered"] for h in handles), 5, message="recorded")
        assert len(healthy.deliveries) == 3
    finally:
        healthy.close()
        flaky.close()


def test_results_logs_and_outputs_expire_from_disk(make_server, tmp_path, monkeypatch):
    server = make_server(gpus=[], cpu_workers=1, cleanup_interval=0.5)
    client = server.client()
    monkeypatch.chdir(tmp_path)
    handle = client.submit(outputs_per_attempt, (str(tmp_path / "m"),), max_retries=1, result_ttl=6)  # room for a loaded machine
    assert handle.result(timeout=30) == "final.txt"
    task_files = [server.state_dir / "results" / f"{handle.id}.result",
                  server.state_dir / "outputs" / handle.id / "1" / "log",  # each attempt's own log
                  server.state_dir / "outputs" / handle.id / "2" / "log", server.state_dir / "outputs" / handle.id]
    assert all(p.exists() for p in task_files)
    assert 0 < client.get(handle.id)["outputs"][0]["expires_in"] <= 6
    wait_for(lambda: not any(p.exists() for p in task_files), 20, message="files removed after the TTL")
    task = client.get(handle.id)
    assert task["outputs"] == [] and task["result"]["expired"] and task["result"]["expires_in"] == 0
    assert requests.get(server.url + f"taskq/api/tasks/{handle.id}/result", headers=AUTH).status_code == 410
    assert client.logs(handle.id)["expired"] is True
