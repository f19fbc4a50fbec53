"""Task files in an S3-compatible object store (moto's server on 127.0.0.1), with a worker
"machine" that shares nothing with the server but Redis and the bucket: results, exceptions,
logs and output files all travel through the object store, and expire from it."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess

import pytest
import requests

from conftest import TOKEN, TaskqServer, free_port, start_worker_machine, stop_processes, wait_for

pytestmark = pytest.mark.slow
BUCKET = "taskq-files"


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """moto's S3 server on a free port, with a bucket; AWS test credentials for everything started here."""
    pytest.importorskip("s3fs")
    if shutil.which("moto_server") is None:
        pytest.skip("moto[server] is not installed")
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    port = free_port()
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=open(tmp_path / "moto.log", "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"

    def answers():
        try:
            return requests.get(endpoint, timeout=1).status_code < 500
        except requests.RequestException:
            return False

    try:
        wait_for(answers, 30, 0.1, "moto's S3 server")
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=endpoint)
        fs.mkdir(BUCKET)
        yield endpoint, fs
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def make_outputs(size, where):
    import os

    from jupyter_taskq import Output, progress

    os.chdir(where)
    print("starting")
    os.makedirs("plots", exist_ok=True)
    with open("plots/a.txt", "w") as f:
        f.write("a" * 1000)
    with open("blob.bin", "wb") as f:
        f.write(os.urandom(size))
    Output("blob.bin").save()
    Output("plots").save()
    progress(1, 1)
    print("done")
    return size


def broken():
    raise KeyError("not in the bucket")


def test_files_travel_through_s3_between_machines(tmp_path, s3):
    endpoint, fs = s3
    url = f"s3://{BUCKET}/queue"
    server = TaskqServer(tmp_path, gpus=[], cpu_workers=0, backend="redis", start_workers=False,
                         files_dir=url, files_options={"endpoint_url": endpoint}, cleanup_interval=1)
    server.start(wait_workers=False)
    worker = start_worker_machine(tmp_path, "far", server.redis.url, url, "--gpus", "", "--cpu-workers", "1",
                                  env={"JUPYTER_TASKQ_FILES_OPTIONS": f'{{"endpoint_url": "{endpoint}"}}'})
    machine = tmp_path / "far"
    try:
        client = server.client()
        wait_for(lambda: any(w["alive"] for w in client.stats()["workers"]), 60, 0.1, "the far worker")

        handle = client.submit(make_outputs, (3_000_000, str(machine)), result_ttl=300)
        assert handle.result(timeout=60) == 3_000_000
        task = client.get(handle.id)
        names = {o["name"]: o for o in task["outputs"]}
        assert set(names) == {"blob.bin", "plots.zip"}, names
        keys = fs.find(f"{BUCKET}/queue")
        assert any(k.endswith(f"{handle.id}.result") for k in keys)
        assert any("blob.bin" in k for k in keys)
        assert not list((machine / "state" / "files" / "results").iterdir()), "the worker keeps no copies"

        blob = requests.get(server.url.rstrip("/") + names["blob.bin"]["url"],
                            headers={"Authorization": f"token {TOKEN}"}, timeout=60)
        assert blob.status_code == 200 and len(blob.content) == 3_000_000
        local = next((machine / "state").rglob("blob.bin"), None)
        assert local is None
        served = server.state_dir / "files" / "outputs" / handle.id
        assert hashlib.sha256(blob.content).hexdigest() == hashlib.sha256(
            next(served.rglob("blob.bin")).read_bytes()).hexdigest()
        assert "starting" in handle.logs() and "done" in handle.logs()

        failing = client.submit(broken, max_retries=0)
        with pytest.raises(KeyError) as failed:  # the exception itself, unpickled from the bucket
            failing.result(timeout=60)
        assert "not in the bucket" in str(failed.value)

        short = client.submit(make_outputs, (10, str(machine)), result_ttl=1)
        short.result(timeout=60)
        wait_for(lambda: not any(short.id in k for k in fs.find(f"{BUCKET}/queue")), 30, 0.2,
                 "the expired task's files to leave the bucket")
        assert client.get(short.id)["result"]["available"] is False
    finally:
        stop_processes([worker])
        server.close()


def test_a_shared_part_travels_through_s3_once_and_leaves_with_its_last_task(tmp_path, s3):
    """map() of a function capturing data: the far worker fetches the one blob the bucket holds."""
    import numpy as np

    from test_shared_data import notebook_function

    endpoint, fs = s3
    url = f"s3://{BUCKET}/queue"
    server = TaskqServer(tmp_path, gpus=[], cpu_workers=0, backend="redis", start_workers=False,
                         files_dir=url, files_options={"endpoint_url": endpoint})
    server.start(wait_workers=False)
    worker = start_worker_machine(tmp_path, "far", server.redis.url, url, "--gpus", "", "--cpu-workers", "1",
                                  env={"JUPYTER_TASKQ_FILES_OPTIONS": f'{{"endpoint_url": "{endpoint}"}}'})
    try:
        client = server.client()
        wait_for(lambda: any(w["alive"] for w in client.stats()["workers"]), 60, 0.1, "the far worker")
        data = np.arange(500_000, dtype=np.float64)  # 4 MB
        pick = notebook_function("def pick(i):\n    return float(DATA[i])\n", DATA=data)
        handles = client.submit_many(pick, range(6))
        assert [h.result(timeout=60) for h in handles] == [float(i) for i in range(6)]
        in_bucket = [k for k in fs.find(f"{BUCKET}/queue") if "/blobs/" in k]
        assert len(in_bucket) == 1 and fs.size(in_bucket[0]) >= data.nbytes
        far_blobs = tmp_path / "far" / "state" / "files" / "blobs"
        wait_for(lambda: not far_blobs.exists() or not any(far_blobs.iterdir()), 30, 0.2,
                 "the idle far worker to drop its copy")
        for handle in handles:
            client.delete(handle.id)
        assert not [k for k in fs.find(f"{BUCKET}/queue") if "/blobs/" in k]
    finally:
        stop_processes([worker])
        server.close()
