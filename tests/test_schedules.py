"""Schedules (issue 24): a function run every interval or on a cron expression, each run a normal task;
kept across a restart of the server without a double run; paused, resumed, edited and deleted at run
time from Python and REST."""

from __future__ import annotations

import requests
import pytest

import jupyter_taskq
from jupyter_taskq import task_queue
from jupyter_taskq.notebook.client import TaskqError

from conftest import TOKEN, wait_for

BACKENDS = ["sqlite", "redis"]


def _completed(schedule) -> list[dict]:
    return [t for t in schedule.runs().infos() if t["status"] == "COMPLETE"]


def test_a_schedule_fires_twice_with_the_server_restarted_between(make_server):
    server = make_server(cpu_workers=1)
    jupyter_taskq.connect(server.url, TOKEN)
    seen = {"value": 7}  # captured by value: the schedule keeps it, not the kernel

    @task_queue(max_retries=0)
    def nightly(factor):
        return seen["value"] * factor

    schedule = nightly.every(2, args=(3,), name="nightly-report")
    assert [s.id for s in jupyter_taskq.schedules()] == [schedule.id]
    wait_for(lambda: len(_completed(schedule)) >= 1, 30, 0.2, "the first run")
    first = _completed(schedule)[0]
    assert first["schedule_id"] == schedule.id and first["name"] == "nightly-report"
    assert schedule.runs()[0].result(timeout=10) == 21

    server.stop()  # down for longer than an interval: the missed run is made once at start-up
    server.start()
    wait_for(lambda: len(_completed(schedule)) >= 2, 30, 0.2, "a run after the restart")
    info = schedule.info()
    runs = schedule.runs().infos()
    assert info["runs"] == len(runs) == len({t["id"] for t in runs})  # every run once, none twice
    every_task = server.client().list(limit=1000)["tasks"]
    assert sum(t["schedule_id"] == schedule.id for t in every_task) == len(runs)

    schedule.pause()
    made = schedule.info()["runs"]
    paused_since = len(server.client().list(limit=1000)["tasks"])
    wait_for(lambda: schedule.info()["paused"], 5)
    # Two intervals paused (the server looks once a second): no run.
    with pytest.raises(AssertionError):
        wait_for(lambda: schedule.info()["runs"] > made, 4.5, 0.5, "no run while paused")
    assert len(server.client().list(limit=1000)["tasks"]) == paused_since

    schedule.edit(every="1s")
    schedule.resume()
    wait_for(lambda: schedule.info()["runs"] >= made + 2, 20, 0.2, "runs after resuming at 1 s")
    schedule.delete()
    assert jupyter_taskq.schedules() == []
    with pytest.raises(TaskqError) as gone:
        schedule.info()
    assert gone.value.status_code == 404


def test_cron_schedules_and_bad_input_over_rest(make_server):
    server = make_server(cpu_workers=1)
    jupyter_taskq.connect(server.url, TOKEN)

    @task_queue
    def job():
        return 1

    schedule = job.schedule(cron="*/5 * * * *", catch_up="skip")
    info = schedule.info()
    assert info["cron"] == "*/5 * * * *" and info["catch_up"] == "skip" and info["next_run_at"].endswith("Z")
    api, headers = server.url + "taskq/api/schedules", {"Authorization": f"token {TOKEN}"}
    listed = requests.get(api, headers=headers, timeout=10).json()["schedules"]
    assert [s["id"] for s in listed] == [schedule.id]
    for change, message in (({"cron": "61 * * * *"}, "minute"), ({"cron": "* * *"}, "five fields"),
                            ({"every": 0}, "'every' must be"), ({"every": "soon"}, "'every' must be"),
                            ({"paused": "yes"}, "'paused'"), ({"catch_up": "all"}, "'catch_up'"),
                            ({"owner": "mallory"}, "unknown schedule field")):
        answer = requests.patch(f"{api}/{schedule.id}", json=change, headers=headers, timeout=10)
        assert answer.status_code == 400 and message in answer.json()["message"], (change, answer.text)
    assert requests.patch(f"{api}/{schedule.id}", json={"paused": True}, headers=headers,
                          timeout=10).json()["paused"] is True
    assert requests.get(f"{api}/nope", headers=headers, timeout=10).status_code == 404
    bad = requests.post(api, json={"payload": "not base64!", "every": 5}, headers=headers, timeout=10)
    assert bad.status_code == 400
    assert requests.delete(f"{api}/{schedule.id}", headers=headers, timeout=10).status_code == 204
    assert requests.get(api, headers=headers, timeout=10).json()["schedules"] == []
