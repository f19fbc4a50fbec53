"""A widget followed from the kernel (the page cannot reach the queue itself): the kernel relays the front end's
API requests, and its follower thread sends, with each change to the widget's tasks, fresh answers to the reads
the front end made, so the widget updates while the kernel is busy. It stops once its tasks have ended or been
deleted. No rows are ever synced state."""

from __future__ import annotations

import pytest

from conftest import wait_for

pytest.importorskip("anywidget")


def wait_for_file(path):
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.05)
    return path


def recording(widget) -> list[dict]:
    """The messages the widget sends its front end (there is no page in these tests: they are kept here)."""
    sent: list[dict] = []
    widget.send = lambda content, buffers=None: sent.append(content)
    return sent


def test_a_task_widget_stops_following_once_its_task_ends_or_is_deleted(shared_server, tmp_path, monkeypatch):
    from jupyter_taskq.notebook.widgets import TaskWidget

    monkeypatch.delenv("JUPYTER_TASKQ_SAME_ORIGIN", raising=False)
    client = shared_server.client()
    handle = client.submit(wait_for_file, (str(tmp_path / "gate"),))
    widget = TaskWidget(client, task_id=handle.id)
    assert widget._thread.is_alive()
    client.cancel([handle.id])
    wait_for(lambda: client.get(handle.id)["status"] == "CANCELLED", 30, message="the cancel")
    widget._thread.join(20)  # a CANCELLED task has ended: nothing more to follow
    assert not widget._thread.is_alive()

    other = client.submit(wait_for_file, (str(tmp_path / "gate"),))
    client.cancel([other.id])
    wait_for(lambda: client.get(other.id)["status"] == "CANCELLED", 30, message="the cancel")
    client.delete(other.id)
    gone = TaskWidget(client, task_id=other.id)
    gone._thread.join(20)  # 404: it used to ask forever
    assert not gone._thread.is_alive()
    assert set(gone.get_state()) >= {"task_id", "text"} and "snapshot" not in gone.get_state()


def test_a_group_widget_relays_reads_and_sends_fresh_answers_as_tasks_change(shared_server, tmp_path, monkeypatch):
    from jupyter_taskq.notebook.widgets import GroupWidget

    monkeypatch.delenv("JUPYTER_TASKQ_SAME_ORIGIN", raising=False)
    client = shared_server.client()
    gate = tmp_path / "gate"
    handles = client.submit_many(wait_for_file, [str(gate)] * 4)
    ids = [h.id for h in handles]
    widget = GroupWidget(client, task_ids=ids)
    sent = recording(widget)
    read = {"event": "request", "id": 1, "key": "POST tasks/wait k", "method": "POST", "path": "tasks/wait",
            "body": {"task_ids": ids, "timeout": 0}}
    widget._on_front_end_message(widget, read, [])
    answer = next(m for m in sent if m["event"] == "response")
    assert answer["id"] == 1 and answer["status"] == 200 and [t["id"] for t in answer["body"]["tasks"]] == ids

    widget._on_front_end_message(widget, {"event": "request", "id": 2, "method": "GET", "path": "../../api/contents"}, [])
    refused = [m for m in sent if m.get("id") == 2][0]
    assert refused["status"] == 400 and "not a jupyter-taskq API request" in refused["body"]["message"]

    gate.touch()

    def final_answer():
        for message in sent:
            for key, status, body in message.get("answers") or []:
                if key == read["key"] and all(t["status"] == "COMPLETE" for t in body["tasks"]):
                    return message
        return None

    wait_for(final_answer, 60, message="a change message answering the widget's read with all four COMPLETE")
    widget._thread.join(20)
    assert not widget._thread.is_alive()
    assert widget.get_state()["task_ids"] == ids and "snapshot" not in widget.get_state()
