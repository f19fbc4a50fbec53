"""A widget followed from the kernel (the page cannot reach the queue itself) stops following once its
tasks have ended or been deleted, and a group's widget fetches only the tasks that changed."""

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


def test_a_task_widget_stops_polling_once_its_task_is_deleted(shared_server, tmp_path, monkeypatch):
    from jupyter_taskq.notebook.widgets import TaskWidget

    monkeypatch.delenv("JUPYTER_TASKQ_SAME_ORIGIN", raising=False)
    client = shared_server.client()
    handle = client.submit(wait_for_file, (str(tmp_path / "gate"),))
    widget = TaskWidget(client, task_id=handle.id, snapshot={})
    assert widget._thread.is_alive()
    client.cancel([handle.id])
    wait_for(lambda: client.get(handle.id)["status"] == "CANCELLED", 30, message="the cancel")
    widget._thread.join(10)  # a CANCELLED task has ended: nothing more to follow
    assert not widget._thread.is_alive()

    other = client.submit(wait_for_file, (str(tmp_path / "gate"),))
    client.cancel([other.id])
    wait_for(lambda: client.get(other.id)["status"] == "CANCELLED", 30, message="the cancel")
    client.delete(other.id)
    gone = TaskWidget(client, task_id=other.id, snapshot={})
    gone._thread.join(10)  # 404: it used to ask forever
    assert not gone._thread.is_alive()


def test_a_group_widget_follows_its_tasks_to_the_end(shared_server, tmp_path, monkeypatch):
    from jupyter_taskq.notebook.widgets import GroupWidget

    monkeypatch.delenv("JUPYTER_TASKQ_SAME_ORIGIN", raising=False)
    client = shared_server.client()
    gate = tmp_path / "gate"
    handles = client.submit_many(wait_for_file, [str(gate)] * 4)
    widget = GroupWidget(client, task_ids=[h.id for h in handles], snapshot=[])
    wait_for(lambda: len(widget.snapshot) == 4, 30, message="the first snapshot")
    assert {t["status"] for t in widget.snapshot} <= {"PENDING", "RUNNING"}
    gate.touch()
    wait_for(lambda: all(t["status"] == "COMPLETE" for t in widget.snapshot), 60, message="all four COMPLETE")
    widget._thread.join(10)
    assert not widget._thread.is_alive()
    assert [t["id"] for t in widget.snapshot] == [h.id for h in handles]
