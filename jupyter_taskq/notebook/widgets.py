"""Live ipywidgets (anywidget) for a task and a group of tasks.

The front end polls the REST API itself when the page's server runs the queue,
so it updates and its Cancel works while the kernel is busy (a widget's Python
callbacks cannot run then: jupyter-widgets/ipywidgets#3468). Otherwise a kernel
thread pushes snapshots (trait changes from a thread show while the kernel is
busy) and clicks come back to the kernel. No credential is ever a widget trait:
widget state is saved into the notebook.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import anywidget
import traitlets

from collections import Counter

from ..status import FINAL
from .client import TaskqError

STATIC = Path(__file__).parent / "static"
KERNEL_POLL = 0.5
FULL_LOOK = 10.0  # seconds between looks at all of a group's unfinished tasks, whatever the change feed says
#: Tasks a group widget carries in its state (which notebooks save): the rows it draws, each cut to what a
#: row shows; the whole group's counts travel apart. A 2,000-task group's widget state stays a few KB.
GROUP_ROWS = 20
ROW_FIELDS = ("id", "name", "status", "worker", "attempt")


def page_can_reach_queue() -> bool:
    """True when this kernel's queue is the Jupyter server the notebook page talks to."""
    return os.environ.get("JUPYTER_TASKQ_SAME_ORIGIN") == "1" and "JUPYTER_TASKQ_URL" in os.environ


class _TaskqWidget(anywidget.AnyWidget):
    _esm = STATIC / "widgets.js"
    _css = STATIC / "widgets.css"
    kind = traitlets.Unicode("task").tag(sync=True)
    api_path = traitlets.Unicode("").tag(sync=True)

    def __init__(self, client, **kwargs):
        super().__init__(api_path="taskq/api/" if page_can_reach_queue() else "", **kwargs)
        self._client = client
        self.on_msg(self._on_front_end_message)
        if not self.api_path:
            self._thread = threading.Thread(target=self._push_snapshots, daemon=True, name="taskq-widget")
            self._thread.start()

    def _push_snapshots(self) -> None:
        """Until every task shown has ended or is gone (deleted: 404), push a fresh snapshot twice a second."""
        while True:
            try:
                done = self._refresh()
            except TaskqError as exc:
                done = exc.status_code == 404  # deleted: nothing more will ever change
            except Exception:  # the server may be restarting: try again
                done = False
            if done:
                return
            threading.Event().wait(KERNEL_POLL)

    def _on_front_end_message(self, widget, content, buffers) -> None:
        event = content.get("event") if isinstance(content, dict) else None
        if event == "cancel":
            self._client.cancel(self._ids())
        elif event == "retry" and self.kind == "task":
            self.task_id = self._client.retry(self.task_id).id
        self._refresh()


class TaskWidget(_TaskqWidget):
    task_id = traitlets.Unicode().tag(sync=True)
    snapshot = traitlets.Dict().tag(sync=True)

    def _ids(self) -> list[str]:
        return [self.task_id]

    def _refresh(self) -> bool:
        self.snapshot = self._client.get(self.task_id)
        return self.snapshot["status"] in FINAL


class GroupWidget(_TaskqWidget):
    """A group's live summary. Its synced state is the counts per status, the total, and the first
    :data:`GROUP_ROWS` tasks as rows; the kernel keeps the rest. A group the server knows by id
    (``group_id``, see jupyter_taskq/server/groups.py) and too big to list syncs no ids at all: the
    front end reads ``groups/<id>`` instead."""

    task_ids = traitlets.List(traitlets.Unicode()).tag(sync=True)
    group_id = traitlets.Unicode("").tag(sync=True)
    snapshot = traitlets.List().tag(sync=True)  # the first GROUP_ROWS tasks, cut to ROW_FIELDS
    counts = traitlets.Dict().tag(sync=True)
    total = traitlets.Int(0).tag(sync=True)

    def __init__(self, client, task_ids=(), snapshot=(), group_id: str = "", **kwargs):
        self._all_ids = list(task_ids)
        self._tasks = list(snapshot)
        big = bool(group_id) and len(self._all_ids) > GROUP_ROWS
        super().__init__(client, kind="group", task_ids=[] if big else self._all_ids,
                         group_id=group_id if big else "", total=len(self._all_ids), **kwargs)
        self._publish()

    @property
    def tasks(self) -> list[dict]:
        """Every task of the group as last read (the synced snapshot holds only the first rows)."""
        return list(self._tasks)

    def _publish(self) -> None:
        self.counts = dict(Counter(t.get("status") or "MISSING" for t in self._tasks))  # MISSING: deleted
        self.snapshot = [{k: t.get(k) for k in ROW_FIELDS} for t in self._tasks[:GROUP_ROWS]]

    def _ids(self) -> list[str]:
        return list(self._all_ids)

    def _refresh(self) -> bool:
        """Fetch only the tasks that changed since the last look (the server's change feed), not all
        of them each time: polling a 2,000-task map twice a second would otherwise cost the server
        the JSON of 2,000 tasks per poll."""
        cursor = getattr(self, "_cursor", None)
        changed = None
        if cursor is not None:
            changed = self._client._request("GET", "changes", params={"since": cursor, "wait": 0}).json()
            self._cursor, changed = changed["cursor"], changed["changed"]
        if cursor is None:  # the first look: everything
            self._cursor = self._client._request("GET", "changes", params={"since": "", "wait": 0}).json()["cursor"]
            self._tasks = self._client.tasks_by_id(self._all_ids)
            self._full_at = time.monotonic()
        else:
            if changed is None or time.monotonic() - self._full_at >= FULL_LOOK:
                # The feed cannot tell (or a while went by, and a ring may have been lost): every task
                # not yet ended, since an ended task does not change.
                wanted = [t["id"] for t in self._tasks if t["status"] not in FINAL and t["status"] is not None]
                self._full_at = time.monotonic()
            else:
                ours = set(self._all_ids)
                wanted = [i for i in dict.fromkeys(changed) if i in ours]
            if wanted:
                fresh = {t["id"]: t for t in self._client.tasks_by_id(wanted)}
                self._tasks = [fresh.get(t["id"], t) for t in self._tasks]
        self._publish()
        return all(t["status"] in FINAL or t["status"] is None for t in self._tasks)  # None: deleted
