"""Big captured data: a function shared by many tasks (map(), put() in a loop) is sent and stored once.

The function part, with the data it captures, travels as one content-addressed blob
(``PUT taskq/api/blobs/<sha256>``); each task's payload carries only its arguments. The
server keeps one file per blob and removes it with the last task that names it.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import pytest
import requests

from conftest import TOKEN, wait_for
from jupyter_taskq import batchstream
from jupyter_taskq.blobs import SHARE_AT
from jupyter_taskq.notebook.client import TaskqError
from jupyter_taskq.payload import calling_context, dumps_call

AUTH = {"Authorization": f"token {TOKEN}"}


def notebook_function(source: str, **captured):
    """A function defined as in a notebook (module __main__), capturing ``captured`` as its globals."""
    namespace = {"__name__": "__main__", **captured}
    exec(source, namespace)  # noqa: S102 - test-only
    return next(v for k, v in namespace.items() if callable(v) and not k.startswith("__") and k not in captured)


def folder_bytes(folder) -> list[int]:
    return sorted(p.stat().st_size for p in folder.iterdir() if p.is_file())


def test_a_map_capturing_a_large_array_stores_it_once_and_removes_it_with_its_last_task(make_server):
    server = make_server(gpus=[], cpu_workers=2)
    client = server.client()
    data = np.arange(2_500_000, dtype=np.float64)  # 20 MB, captured as a global by the function
    scaled = notebook_function("def scaled(i):\n    return float(DATA[i * 1000]) * 2 + DATA.size\n", DATA=data)
    blobs, payloads = server.state_dir / "blobs", server.state_dir / "payloads"

    handles = client.submit_many(scaled, range(40))
    client.wait([h.id for h in handles], timeout=120)
    assert [h.result(timeout=30) for h in handles] == [float(data[i * 1000]) * 2 + data.size for i in range(40)]
    assert [h.status() for h in handles] == ["COMPLETE"] * 40

    stored = folder_bytes(blobs)
    assert len(stored) == 1, "one copy of the function and its data, whatever the number of tasks"
    assert data.nbytes <= stored[0] < data.nbytes + 1024 * 1024
    assert max(folder_bytes(payloads)) < 64 * 1024, "each task's payload carries only its arguments"

    for handle in handles[:-1]:
        client.delete(handle.id)
    assert len(folder_bytes(blobs)) == 1, "still named by one task"
    client.delete(handles[-1].id)
    assert folder_bytes(blobs) == [], "removed with its last task"

    again = client.submit_many(scaled, [1, 2])  # the server lacks it now: sent again, once
    assert [h.result(timeout=60) for h in again] == [float(data[1000]) * 2 + data.size,
                                                      float(data[2000]) * 2 + data.size]
    assert len(folder_bytes(blobs)) == 1


def test_put_in_a_loop_stores_the_shared_part_once_and_the_ttl_clean_up_removes_it(make_server):
    server = make_server(gpus=[], cpu_workers=1, cleanup_interval=0.5)
    client = server.client()
    table = np.ones(SHARE_AT, dtype=np.uint8)  # just over the size that is worth sharing
    lookup = notebook_function("def lookup(i):\n    return int(TABLE[:i].sum())\n", TABLE=table)
    blobs = server.state_dir / "blobs"

    handles = [client.submit(lookup, (i,), result_ttl=1) for i in range(5)]
    assert [h.result(timeout=60) for h in handles] == list(range(5))
    assert len(folder_bytes(blobs)) == 1
    wait_for(lambda: folder_bytes(blobs) == [], 30, 0.2, "the blob to go with the last task's files")
    assert all(client.get(h.id)["result"]["expired"] for h in handles)


def test_a_retry_keeps_the_shared_part_until_it_is_deleted_too(make_server):
    server = make_server(gpus=[], cpu_workers=1)
    client = server.client()
    data = np.arange(SHARE_AT // 4, dtype=np.int64)
    total = notebook_function("def total(k):\n    return int(DATA.sum()) * k\n", DATA=data)
    blobs = server.state_dir / "blobs"
    first = client.submit(total, (2,))
    assert first.result(timeout=60) == int(data.sum()) * 2
    second = first.retry()
    assert second.result(timeout=60) == int(data.sum()) * 2
    client.delete(first.id)
    assert len(folder_bytes(blobs)) == 1, "the retry names it too"
    client.delete(second.id)
    assert folder_bytes(blobs) == []


def _batch(payload: bytes) -> bytes:
    return b"".join(batchstream.frames([({"name": "t"}, payload)]))


def test_the_blob_api_checks_hashes_payloads_and_references(shared_server):
    api = shared_server.url + "taskq/api/"
    blob = dumps_call(len, (), {})
    key = hashlib.sha256(blob).hexdigest()

    assert requests.head(api + f"blobs/{key}", headers=AUTH).status_code == 404
    wrong = requests.put(api + f"blobs/{'0' * 64}", data=blob, headers=AUTH)
    assert wrong.status_code == 400 and key in wrong.json()["message"]
    junk = b"not a payload"
    refused = requests.put(api + f"blobs/{hashlib.sha256(junk).hexdigest()}", data=junk, headers=AUTH)
    assert refused.status_code == 400 and "payload" in refused.json()["message"]
    assert requests.put(api + "blobs/not-a-hash", data=blob, headers=AUTH).status_code == 400
    assert requests.put(api + f"blobs/{key}", data=blob, headers=AUTH).status_code == 201
    assert requests.put(api + f"blobs/{key}", data=blob, headers=AUTH).status_code == 200
    head = requests.head(api + f"blobs/{key}", headers=AUTH)
    assert head.status_code == 200 and int(head.headers["X-Taskq-Max-Payload-Size"]) > 0

    context = calling_context()
    missing = dumps_call(None, ([1, 2, 3],), {}, context={**context, "blob": "f" * 64})
    response = requests.post(api + "tasks/batch", data=_batch(missing),
                             headers={**AUTH, "Content-Type": batchstream.CONTENT_TYPE})
    assert response.status_code == 409 and f"blobs/{'f' * 64}" in response.json()["message"]
    bad_name = dumps_call(None, (), {}, context={**context, "blob": "../../etc/passwd"})
    response = requests.post(api + "tasks/batch", data=_batch(bad_name),
                             headers={**AUTH, "Content-Type": batchstream.CONTENT_TYPE})
    assert response.status_code == 400 and "sha256" in response.json()["message"]

    named = dumps_call(None, ([1, 2, 3],), {}, context={**context, "blob": key})
    response = requests.post(api + "tasks/batch", data=_batch(named),
                             headers={**AUTH, "Content-Type": batchstream.CONTENT_TYPE})
    assert response.status_code == 201, response.text
    task = shared_server.client().get(response.json()["tasks"][0]["id"], wait=30)
    assert task["status"] == "COMPLETE"
    assert shared_server.client().result(task["id"]) == 3, "len([1, 2, 3]), len from the blob"


def test_a_truncated_or_malformed_batch_stream_is_refused_and_leaves_nothing(shared_server):
    api = shared_server.url + "taskq/api/"
    before = shared_server.client().list()["total"]
    payload = dumps_call(len, ([1],))
    for body in (_batch(payload)[:-5], b"\x00\x00\x00\x05[1,2]" + _batch(payload), b"\xff" * 16, b""):
        response = requests.post(api + "tasks/batch", data=body,
                                 headers={**AUTH, "Content-Type": batchstream.CONTENT_TYPE})
        assert response.status_code == 400, (body[:20], response.text)
        assert response.json()["message"]
    assert shared_server.client().list()["total"] == before
    wait_for(lambda: not any((shared_server.state_dir / "spool").iterdir()), 5, 0.05, "an empty spool")


def test_a_shared_part_over_the_limit_is_refused_before_it_is_sent(make_server):
    server = make_server(gpus=[], cpu_workers=1, max_payload_size=SHARE_AT + 64 * 1024)
    big = notebook_function("def big(i):\n    return BIG[i]\n", BIG=b"x" * (2 * SHARE_AT))
    with pytest.raises(TaskqError) as refused:
        server.client().submit_many(big, range(3))
    assert refused.value.status_code == 413
    message = str(refused.value)
    assert "TaskQueue.max_payload_size" in message and f"{SHARE_AT + 64 * 1024:,}" in message
    assert server.client().list()["total"] == 0 and not any((server.state_dir / "blobs").iterdir())


def test_notebook_classes_in_the_arguments_are_the_shared_functions_own(shared_server):
    """The function comes from the shared part, its arguments from each payload: one class all the same."""
    namespace = {"__name__": "__main__", "DATA": np.ones(SHARE_AT // 8 + 1)}
    exec("class Point:\n    def __init__(self, x):\n        self.x = x\n"  # noqa: S102 - test-only
         "def check(p):\n    return isinstance(p, Point), p.x + DATA.size\n", namespace)
    handles = shared_server.client().submit_many(namespace["check"], [namespace["Point"](1), namespace["Point"](2)])
    size = namespace["DATA"].size
    assert [h.result(timeout=60) for h in handles] == [(True, 1 + size), (True, 2 + size)]


def test_an_upload_no_task_names_is_swept_after_a_while(make_server):
    """The kernel died between uploading the shared part and sending its batch: the part does not stay."""
    from jupyter_taskq.server.blobstore import UNCLAIMED_FOR

    server = make_server(gpus=[], cpu_workers=1, cleanup_interval=0.5)
    api = server.url + "taskq/api/"
    parts = {}
    for name, fn in (("old", len), ("fresh", sum)):
        blob = dumps_call(fn, (), {})
        parts[name] = hashlib.sha256(blob).hexdigest()
        assert requests.put(api + f"blobs/{parts[name]}", data=blob, headers=AUTH).status_code == 201
    old = server.state_dir / "blobs" / f"{parts['old']}.blob"
    an_hour_ago = time.time() - UNCLAIMED_FOR - 60
    os.utime(old, (an_hour_ago, an_hour_ago))
    wait_for(lambda: not old.exists(), 30, 0.2, "the unclaimed upload to be swept")
    assert requests.head(api + f"blobs/{parts['fresh']}", headers=AUTH).status_code == 200
    assert requests.head(api + f"blobs/{parts['old']}", headers=AUTH).status_code == 404
