"""How handles and groups show in a notebook: the front-end output of :mod:`.mime` (live in
JupyterLab without the kernel), a live widget for other front ends with ipywidgets, and text
and HTML summaries for wherever neither renders (nbval, a terminal, GitHub). mime.py says
how a front end picks among them."""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

from ..taskline import LIST_ERROR_CHARS, task_line
from ..taskline import LIST_LIMIT as HTML_LIST_LIMIT


def _kernel_can_show_widgets() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def task_text(info: dict) -> str:
    return task_line(info)


def task_html(info: dict) -> str:
    text = html.escape(task_text(info))
    error = info.get("error") or {}
    failed = error.get("traceback") and info["status"] != "COMPLETE"
    tb = f"<pre>{html.escape(error['traceback'])}</pre>" if failed else ""
    return f"<div class='jtq-summary'><code>{text}</code>{tb}</div>"


def group_text(infos: list[dict]) -> str:
    counts = Counter(i["status"] for i in infos)
    return f"{len(infos)} tasks: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def _list_line(info: dict) -> str:
    """One task of a group's HTML list: its text line, the error cut short, no traceback."""
    return f"<li><code>{html.escape(task_line(info, cut_at=LIST_ERROR_CHARS))}</code></li>"


def task_bundle(handle) -> dict:
    from .mime import MIME, task_ref

    info = handle.info()
    data = {"text/plain": task_text(info), "text/html": task_html(info), MIME: task_ref(handle.id)}
    if _kernel_can_show_widgets():
        from .widgets import TaskWidget

        widget = TaskWidget(handle.client, task_id=handle.id, text=task_text(info))
        data.update(_widget_data(widget))
        data["text/plain"] = task_text(info)
    return data


def group_bundle(group) -> dict:
    from .mime import MIME, group_ref

    infos = group.infos()
    items = "".join(_list_line(i) for i in infos[:HTML_LIST_LIMIT])
    shown = f"<p>showing {HTML_LIST_LIMIT} of {len(infos)} tasks</p>" if len(infos) > HTML_LIST_LIMIT else ""
    data: dict[str, Any] = {"text/plain": group_text(infos),
            "text/html": f"<div><b>{html.escape(group_text(infos))}</b>{shown}<ul>{items}</ul></div>"}
    ref = group_ref(group) if group.handles else None
    if ref is not None:
        data[MIME] = ref
    if _kernel_can_show_widgets() and group.handles:
        from .widgets import GroupWidget

        widget = GroupWidget(group.client, task_ids=group.ids, group_id=(ref or {}).get("group", ""),
                             text=group_text(infos))
        data.update(_widget_data(widget))
        data["text/plain"] = group_text(infos)
        # Beside a live widget the HTML is only what a viewer without widgets shows (GitHub, nbviewer): the
        # counts line, not a list of tasks, so a saved group stays under 2 KB however many it has (issue 19).
        data["text/html"] = f"<div><b>{html.escape(group_text(infos))}</b></div>"
    return data


def _widget_data(widget) -> dict:
    bundle = widget._repr_mimebundle_()
    return bundle[0] if isinstance(bundle, tuple) else bundle
