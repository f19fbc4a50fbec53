"""Live ipywidgets (anywidget) for a task and a group of tasks, for front ends without the Lab renderer.

What a notebook saves of a widget is its synced state, so that state is only which tasks it shows
(a task id, up to :data:`~.mime.INLINE_IDS` ids, or a server-side group id), the group's size, one line of
text, and a loader of a few hundred bytes as anywidget's ``_esm``: a displayed group of any size adds
well under 2 KB of widget state, even to a notebook run headless (nbclient saves widget state).

The loader imports the widget's code from the page's server (``taskq/static/taskq-widget.js``, built from
labextension/src: the Lab renderer's API client, output model and change-feed following; see
jupyter_taskq/server/widgetjs.py), or, where the page has no such server (VS Code), asks this kernel for
it; where neither answers (a notebook opened later, its kernel gone) it shows the line of text.

The rows come over REST, never as synced traits. When the page's server runs the queue (``api_path``
set) the widget calls the API itself, with the page's cookie, and stays live while the kernel is busy.
Otherwise the kernel relays its requests (custom comm messages, which are not saved), and a kernel thread
follows the server's change feed and sends, with each change to the widget's tasks, fresh answers to the
reads the widget made, so it updates while the kernel runs another cell (a widget's Python callbacks
cannot run then: jupyter-widgets/ipywidgets#3468). No credential is ever a widget trait or message.
"""

from __future__ import annotations

import os
import re
import threading

import anywidget
import ipywidgets
import traitlets

from .. import widgetbundle
from ..status import FINAL
from .errors import TaskqError
from .mime import API_PATH, INLINE_IDS

#: Seconds the kernel's follower lets one long-poll of the change feed wait.
FEED_WAIT = 10.0
#: Seconds between two change messages: a busy map costs the server a few follower rounds a second at most.
MIN_INTERVAL = 0.2
#: Reads the follower answers ahead with each change (the widget's latest distinct reads).
REPLAYS = 4
#: What a relayed request may name: a path under the queue's API, nothing else.
_RELAY_PATH = re.compile(r"[A-Za-z0-9._~/?=&%,+-]{1,2000}")


#: anywidget's ``_esm``, the only code in the saved state: import the bundle from the page's server, else
#: ask the kernel for it, else show the widget's line of text. ``?v=`` makes a new bundle bypass caches.
LOADER = f'const U="{widgetbundle.URL}?v={widgetbundle.version()}";' + (
    'function b(){try{return JSON.parse(document.getElementById("jupyter-config-data").textContent).baseUrl||"/"}'
    'catch(e){return"/"}}'
    'function k(m){return new Promise(r=>{const t=setTimeout(()=>r(null),9e3);m.on("msg:custom",x=>{'
    'if(x&&x.event==="bundle"){clearTimeout(t);r(x.source)}});m.send({event:"bundle"})})}'
    'export default{async render(c){let w=null;try{w=await import(b()+U)}catch(e){const s=await k(c.model);'
    'if(s)try{w=await import(URL.createObjectURL(new Blob([s],{type:"text/javascript"})))}catch(e){}}'
    'if(!w){c.el.textContent=c.model.get("text");return}return w.render(c)}}'
)


def page_can_reach_queue() -> bool:
    """True when this kernel's queue is the Jupyter server the notebook page talks to."""
    return os.environ.get("JUPYTER_TASKQ_SAME_ORIGIN") == "1" and "JUPYTER_TASKQ_URL" in os.environ


def _relay_path(path) -> str | None:
    if isinstance(path, str) and _RELAY_PATH.fullmatch(path) and ".." not in path and not path.startswith("/"):
        return path
    return None


def _replayable(method: str, path: str) -> bool:
    """A read whose answer changes when the tasks do (not a log or result read, not the one-off id list)."""
    if method == "POST":
        return path == "tasks/wait"
    return method == "GET" and "ids=1" not in path and not re.search(r"/(logs|display|attempts)\b", path)


class _TaskqWidget(anywidget.AnyWidget):
    _esm = LOADER
    #: No Layout model: it would be a second model of 1 KB in every saved notebook, for styles never set.
    layout = traitlets.Instance(ipywidgets.Layout, allow_none=True, default_value=None).tag(
        sync=True, **ipywidgets.widget_serialization)
    kind = traitlets.Unicode("task").tag(sync=True)
    api_path = traitlets.Unicode("").tag(sync=True)
    #: What the widget says where its code cannot load (a notebook opened later, without the server).
    text = traitlets.Unicode("").tag(sync=True)

    def __init__(self, client, **kwargs):
        super().__init__(api_path=API_PATH if page_can_reach_queue() else "", **kwargs)
        self._client = client
        self._replays: dict[str, tuple[str, str, object]] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.on_msg(self._on_front_end_message)
        self._follow()

    # -- what the subclasses say ------------------------------------------------------------------
    def _ids(self) -> set[str]:
        raise NotImplementedError

    def _finished(self) -> bool:
        raise NotImplementedError

    # -- the kernel's follower (only where the page cannot reach the queue) ----------------------
    def _follow(self) -> None:
        with self._lock:
            if self.api_path or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._follow_changes, daemon=True, name="taskq-widget")
            self._thread.start()

    def _follow_changes(self) -> None:
        """Until every task shown has ended or is gone (404): long-poll the change feed, and on a change to
        the widget's tasks send the changed ids with fresh answers to its reads."""
        cursor = ""
        stop = threading.Event()
        while True:
            try:
                if self._finished():
                    self._send_changes(None)  # the last state, whatever the widget missed
                    return
                reply = self._client._request("GET", "changes",
                                              params={"since": cursor, "wait": FEED_WAIT if cursor else 0}).json()
                cursor, changed = reply["cursor"], reply["changed"]
                ours = None if changed is None else [i for i in changed if i in self._ids()]
                if ours is None or ours:
                    self._send_changes(ours)
                    stop.wait(MIN_INTERVAL)
            except TaskqError as exc:
                if exc.status_code == 404:  # deleted: nothing more will ever change
                    self._send_changes(None)
                    return
                stop.wait(1)
            except Exception:  # the server may be restarting: try again
                stop.wait(1)

    def _send_changes(self, changed: list[str] | None) -> None:
        answers = []
        for key, (method, path, body) in list(self._replays.items())[-REPLAYS:]:
            status, answer = self._call(method, path, body)
            answers.append([key, status, answer])
        self.send({"event": "changes", "changed": changed, "answers": answers})

    def _call(self, method: str, path: str, body) -> tuple[int, object]:
        try:
            response = self._client._send(method, path, json=body if method != "GET" else None)
        except Exception as exc:  # unreachable: the widget says so
            return 503, {"message": f"the kernel could not reach the queue ({exc})"}
        if response.status_code == 204 or not response.content:
            return response.status_code, None
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {"message": response.text[:300]}

    # -- the front end's messages -----------------------------------------------------------------
    def _on_front_end_message(self, widget, content, buffers) -> None:
        if not isinstance(content, dict):
            return
        event = content.get("event")
        if event == "bundle":  # the page has no server with the widget's code (VS Code): send it
            try:
                source = widgetbundle.PATH.read_text(encoding="utf-8")
            except OSError:
                source = None
            self.send({"event": "bundle", "source": source})
        elif event == "request":
            method = str(content.get("method") or "GET").upper()
            path = _relay_path(content.get("path"))
            answer: object
            if method not in ("GET", "POST", "DELETE") or path is None:
                status, answer = 400, {"message": "not a jupyter-taskq API request", "reason": "bad request"}
            else:
                status, answer = self._call(method, path, content.get("body"))
                key = content.get("key")
                if isinstance(key, str) and len(key) < 100_000 and _replayable(method, path):
                    self._replays.pop(key, None)
                    self._replays[key] = (method, path, content.get("body"))
                    while len(self._replays) > REPLAYS:
                        self._replays.pop(next(iter(self._replays)))
            self.send({"event": "response", "id": content.get("id"), "status": status, "body": answer})
            if method == "POST":
                self._follow()  # a retry or cancel: there is something to follow again


class TaskWidget(_TaskqWidget):
    task_id = traitlets.Unicode().tag(sync=True)

    def _ids(self) -> set[str]:
        return {self.task_id}

    def _finished(self) -> bool:
        return self._client.get(self.task_id)["status"] in FINAL

    @traitlets.observe("task_id")
    def _on_retry(self, change) -> None:
        """The front end retried: the widget (and the follower) now show the new task."""
        if getattr(self, "_client", None) is not None:
            self._follow()


class GroupWidget(_TaskqWidget):
    """A group's live summary. Its synced state names the group: up to :data:`~.mime.INLINE_IDS` task ids,
    else the server-side group id (``POST groups``, see jupyter_taskq/server/groups.py) and the count."""

    task_ids = traitlets.List(traitlets.Unicode()).tag(sync=True)
    group_id = traitlets.Unicode("").tag(sync=True)
    total = traitlets.Int(0).tag(sync=True)

    def __init__(self, client, task_ids=(), group_id: str = "", **kwargs):
        self._all_ids = list(task_ids)
        self._id_set = set(self._all_ids)
        named = bool(group_id) and len(self._all_ids) > INLINE_IDS
        super().__init__(client, kind="group", task_ids=[] if named else self._all_ids,
                         group_id=group_id if named else "", total=len(self._all_ids), **kwargs)

    def _ids(self) -> set[str]:
        return self._id_set

    def _finished(self) -> bool:
        if self.group_id:
            return bool(self._client._request("GET", f"groups/{self.group_id}", params={"limit": 0}).json()["done"])
        tasks = self._client.tasks_by_id(self._all_ids)
        return all(t["status"] in FINAL or t["status"] is None for t in tasks)

