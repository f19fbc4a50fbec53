"""Numbers, bodies and manifests from outside (issue 25, items 4, 8 and 10), against a real server.

* Every JSON answer is strict JSON (JavaScript's ``JSON.parse`` rejects ``NaN`` and ``Infinity``, and one
  task's ``progress(inf)`` broke every panel's task list): ``progress()`` refuses them in the task, the
  worker refuses a progress file that holds them, and a record stored before the checks goes out clean.
* A task-written outputs manifest is checked like any input: bad lines are skipped and said in the
  attempt's log, the attempt keeps its valid outputs, and nothing is advertised outside its folder.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
import requests

from conftest import TOKEN, wait_for

AUTH = {"Authorization": f"token {TOKEN}"}


def strict(response: requests.Response) -> object:
    """The answer's JSON, parsed as a browser would: ``NaN``/``Infinity`` fail the test."""
    assert response.status_code < 500, (response.status_code, response.text[:300])

    def refuse(constant):
        pytest.fail(f"{constant} in the answer of {response.request.method} {response.url}")

    return json.loads(response.text, parse_constant=refuse)


def report_bad_progress():
    """progress() refuses what is not a finite number, in the task, with a clear ValueError."""
    from jupyter_taskq import progress

    refused = []
    for args in ((float("inf"),), (float("nan"), 10), (1, float("inf")), (-1,), ("lots",)):
        try:
            progress(*args)
        except ValueError as exc:
            refused.append(str(exc))
    progress(3, 10, "fine")
    return refused


def write_progress_by_hand():
    """A task that bypasses progress() and writes its progress file itself."""
    import os
    import time

    path = os.path.join(os.environ["JUPYTER_TASKQ_ATTEMPT_DIR"], "progress.json")
    with open(path, "w") as f:
        f.write('{"done": Infinity, "total": NaN, "message": "by hand", "fraction": NaN, "at": 1}')
    time.sleep(1.0)  # the worker copies it while the task runs (four times a second)
    return "written"


def nan_result():
    return {"x": float("nan"), "y": [float("inf"), 1.5]}


def test_every_json_answer_of_a_session_is_strict(shared_server):
    server = shared_server
    client = server.client()
    api = server.url + "taskq/api/"
    cursor = strict(requests.get(api + "changes", headers=AUTH))["cursor"]

    checked = client.submit(report_bad_progress, name="bad-progress")
    refused = checked.result(timeout=30)
    assert len(refused) == 5 and all(m.startswith("progress(): ") for m in refused), refused
    assert "finite number" in refused[0] and "got inf" in refused[0] and "got nan" in refused[1]
    assert wait_for(lambda: client.get(checked.id)["progress"], 10)["done"] == 3

    by_hand = client.submit(write_progress_by_hand, name="progress-by-hand")
    assert by_hand.result(timeout=30) == "written"
    assert client.get(by_hand.id)["progress"] is None, "the worker refused the non-finite progress file"

    nan = client.submit(nan_result, name="nan-result")
    assert nan.result(timeout=30)["y"][1] == 1.5

    # A record stored before the checks existed (or by hand) holds Infinity: it goes out clean.
    with sqlite3.connect(server.state_dir / "taskq.db", timeout=10) as db:
        db.execute("update taskq_tasks set progress = ? where id = ?",
                   ('{"done": Infinity, "total": NaN, "message": "old", "fraction": NaN, "at": 1}', nan.id))
    assert client.get(nan.id)["progress"] is None

    ids = [checked.id, by_hand.id, nan.id]
    group = strict(requests.post(api + "groups", json={"task_ids": ids}, headers=AUTH))["id"]
    answers = {
        "tasks": requests.get(api + "tasks?limit=100", headers=AUTH),
        "task": requests.get(api + f"tasks/{nan.id}", headers=AUTH),
        "stats": requests.get(api + "stats", headers=AUTH),
        "changes": requests.get(api + "changes", params={"since": cursor}, headers=AUTH),
        "group": requests.get(api + f"groups/{group}", headers=AUTH),
        "display": requests.get(api + f"tasks/{nan.id}/display", headers=AUTH),
        "attempts": requests.get(api + f"tasks/{checked.id}/attempts", headers=AUTH),
        "wait": requests.post(api + "tasks/wait", json={"task_ids": ids, "timeout": 0}, headers=AUTH),
        "logs": requests.get(api + f"tasks/{checked.id}/logs", headers=AUTH),
    }
    parsed = {name: strict(response) for name, response in answers.items()}
    assert all(response.status_code == 200 for response in answers.values()), \
        {name: r.status_code for name, r in answers.items()}
    assert set(ids) <= set(parsed["changes"]["changed"])
    listed = {t["id"]: t for t in parsed["tasks"]["tasks"]}
    assert listed[checked.id]["progress"]["fraction"] == 0.3
    assert listed[nan.id]["progress"] is None and listed[by_hand.id]["progress"] is None


def write_manifest_by_hand(folder: str) -> list[str]:
    """Saves two good outputs, then appends bad lines to the manifest the way a task could by hand."""
    import os

    from jupyter_taskq import Output

    saved = []
    for name in ("good.txt", "also-good.txt"):
        path = os.path.join(folder, name)
        with open(path, "w") as f:
            f.write(f"content of {name}")
        saved.append(Output(path).save())
    attempt = os.environ["JUPYTER_TASKQ_ATTEMPT_DIR"]
    bad = [
        {"name": "good.txt", "size": "not a number", "kind": "file"},
        {"name": "x" * 5000, "size": 1, "kind": "file"},
        {"name": "../../../tasks", "size": 1, "kind": "file"},
        {"name": "..", "size": 1, "kind": "file"},
        {"name": "a\\b", "size": 1},
        {"name": "nul\0name", "size": 1},
        {"name": "negative", "size": -5},
        {"name": "float", "size": 1.5},
        "not an object",
    ]
    with open(os.path.join(attempt, "manifest.jsonl"), "a") as f:
        for entry in bad:
            f.write(json.dumps(entry) + "\n")
        f.write("{not json\n")
    return saved


def test_a_bad_manifest_keeps_the_valid_outputs_and_says_why_in_the_log(shared_server, tmp_path):
    client = shared_server.client()
    api = shared_server.url + "taskq/api/"
    handle = client.submit(write_manifest_by_hand, (str(tmp_path),))
    assert handle.result(timeout=30) == ["good.txt", "also-good.txt"], "the attempt completed"
    task = strict(requests.get(api + f"tasks/{handle.id}", headers=AUTH))
    assert task["status"] == "COMPLETE"
    assert [(o["name"], o["size"]) for o in task["outputs"]] == [("good.txt", 19), ("also-good.txt", 24)]
    for output in task["outputs"]:
        assert output["url"].endswith(f"/tasks/{handle.id}/outputs/{output['name']}")
        response = requests.get(shared_server.url.rstrip("/") + output["url"], headers=AUTH)
        assert response.status_code == 200 and response.text == f"content of {output['name']}"

    log = wait_for(lambda: (text := client.logs(handle.id)["data"]).count("outputs manifest line") >= 10 and text,
                   10, 0.1, "the log to name the bad manifest lines")
    for line, words in ((3, "is not a whole number of bytes"), (4, "longer than 255 bytes"),
                        (5, "without '/'"), (6, "must not start with '.'"), (7, "without '/'"), (8, "NUL"),
                        (9, "is not a whole number"), (10, "is not a whole number"), (11, "not a JSON object"),
                        (12, "not valid JSON")):
        assert f"outputs manifest line {line} ignored" in log and words in log, (line, words, log)
    assert log.count("outputs manifest line 3 ignored") == 1, "each bad line said once"

    # Downloads of names that are not outputs never fail with a 500, however long or odd.
    for name in ("x" * 5000, "%2E%2E", "..%2Ftasks", "good.txt%00"):
        response = requests.get(api + f"tasks/{handle.id}/outputs/{name}", headers=AUTH)
        assert response.status_code == 404, (name[:20], response.status_code, response.text[:200])
        assert strict(response)["reason"] == "not found"
