"""The task output that lives in the front end, not in the kernel.

A displayed handle or group carries ``application/vnd.jupyter-taskq.tasks+json``: which
tasks, and the server-relative API path, nothing else (no credentials, no snapshot). The
JupyterLab extension renders it live from the REST API, so the output stays live after a
page reload, with the kernel restarted or shut down, and in a notebook opened days later.

How the kernel chooses what to show: every display carries this bundle, the text and HTML
summaries, and (where the kernel can show widgets) the ipywidget. Each front end picks the
richest it can render: in JupyterLab with our extension this renderer is ranked ahead of the
widget's, so no widget is drawn and no kernel thread polls; a front end with ipywidgets but
without our extension (VS Code, Notebook without the extension) draws the widget; nbviewer,
GitHub and nbconvert show the HTML or text.

A group's ids stay on the server: up to :data:`INLINE_IDS` tasks are listed, a larger group
is registered once (``POST groups``) and named by its id, so one output is a few hundred
bytes however many tasks it shows.
"""

from __future__ import annotations

from .errors import TaskqError

MIME = "application/vnd.jupyter-taskq.tasks+json"
API_PATH = "taskq/api/"
VERSION = 1
#: Groups this small list their ids in the output; larger ones are named by a server-side group id.
INLINE_IDS = 10


def task_ref(task_id: str) -> dict:
    return {"version": VERSION, "api": API_PATH, "task_ids": [task_id]}


def group_ref(group) -> dict | None:
    """The bundle for a group; None when the server cannot register groups (then no live output)."""
    ids = group.ids
    if len(ids) <= INLINE_IDS:
        return {"version": VERSION, "api": API_PATH, "task_ids": ids}
    group_id = getattr(group, "_group_id", None)
    if group_id is None:
        try:
            # The client has no public call for this: groups exist only to name outputs.
            group_id = group.client._request("POST", "groups", json={"task_ids": ids}).json()["id"]
        except TaskqError:  # a server without groups: the widget and HTML still show the group
            return None
        group._group_id = group_id
    return {"version": VERSION, "api": API_PATH, "group": group_id, "count": len(ids)}
