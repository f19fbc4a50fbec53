"""A task's result as a MIME bundle, computed where the task ran, so a notebook shows it without a kernel.

A DataFrame shows as a table in a reopened notebook only if someone turns it into HTML; the server
never unpickles a result (nor could, without the task's packages), so the task's own process does,
right after pickling the result, with IPython's display formatter: the same ``text/html``,
``image/png``... a kernel would show. The bundle is stored beside the result (``results/<id>.display``)
and served by ``GET tasks/<id>/display``.

Cheap first: ``None`` has nothing to show, and a scalar (a number, a short string) stores nothing
either: writing even a small file costs about 2 ms an attempt, so the server makes a scalar's
``text/plain`` itself from the small pickled result (:mod:`jupyter_taskq.server.display`, without
unpickling any class). Only other results pay for IPython (about 0.2 s to import the first time in
a process, then about 1 ms for a small DataFrame). Each bundle is capped
(:data:`MAX_BUNDLE_BYTES`): the entries that do not fit are left out and named. Best effort: with
no IPython in the task's interpreter, or a ``_repr_html_`` that raises, the task still completes, with
nothing (or only what formatted) to show.

Standard library only: in another interpreter (a conda env's) the runner loads this file by path.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import sys

MAX_BUNDLE_BYTES = 256 * 1024
_SCALARS = (bool, int, float, complex)
_SHORT_TEXT = 1000  # characters: its pickle stays under the server's SCALAR_RESULT_BYTES
_LONG_TEXT = (str, bytes, bytearray)
_formatter = None


def bundle(value) -> dict | None:
    """``{"data": {mime: str or JSON}, "metadata": {...}, "left_out": [mime, ...]}``, or None: nothing to show."""
    if value is None or type(value) in _SCALARS or (type(value) in (str, bytes) and len(value) <= _SHORT_TEXT):
        return None  # nothing to show, or the server shows its repr from the result itself
    # IPython would repr all of it: 2 s for 100 MB of bytes, for a line that is cut anyway
    if type(value) in _LONG_TEXT:
        return {"data": {"text/plain": _long_text(value)}, "metadata": {}, "left_out": []}
    formatter = _display_formatter()
    if formatter is None:
        return None
    data, metadata = formatter.format(value)
    return _capped({mime: _jsonable(item) for mime, item in data.items()}, metadata or {})


def _long_text(value) -> str:
    """The repr of a long string or bytes value's first characters, and its length: what a reader can use."""
    head = repr(value[:_SHORT_TEXT])
    kind = "characters" if isinstance(value, str) else "bytes"
    return f"{head[:-1]}...{head[-1]}  ({len(value):,} {kind})" if head[-1] in "'\")" else head


def write(path: str, value) -> None:
    """Store the bundle of ``value`` at ``path`` (user-only, atomically); never raises."""
    try:
        found = bundle(value)
        if not found or not found["data"]:
            return
        text = json.dumps(found, default=str).encode()
        tmp = f"{path}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(text)
        os.replace(tmp, path)
    except Exception:  # noqa: BLE001 - a display is a nicety: the result is already stored
        pass


def _display_formatter():
    global _formatter
    if _formatter is None:
        if "IPython" not in sys.modules and importlib.util.find_spec("IPython") is None:
            return None
        from IPython.core.formatters import DisplayFormatter

        _formatter = DisplayFormatter()
        # A kernel's inline backend registers this; a bare formatter would show "<Figure size 400x300 ...>".
        _formatter.formatters["image/png"].for_type_by_name("matplotlib.figure", "Figure", _figure_png)
    return _formatter


def _figure_png(figure) -> bytes:
    """A returned matplotlib figure as the kernel's inline backend shows it (tight bounding box)."""
    from IPython.core.pylabtools import print_figure

    return print_figure(figure, "png")


def _jsonable(item):
    """Images come as bytes: base64 text, as in a notebook file."""
    if isinstance(item, bytes):
        return base64.b64encode(item).decode("ascii")
    return item


def _size(item) -> int:
    return len(item.encode()) if isinstance(item, str) else len(json.dumps(item, default=str).encode())


def _capped(data: dict, metadata: dict) -> dict:
    """Entries in the formatter's order while they fit; ``text/plain`` always, cut to the cap if it must be."""
    kept, left_out, total = {}, [], 0
    plain = data.pop("text/plain", None)
    if isinstance(plain, str):
        if len(plain.encode()) > MAX_BUNDLE_BYTES:
            plain = plain.encode()[:MAX_BUNDLE_BYTES - 100].decode("utf-8", "ignore") + "\n[... cut to fit]"
        kept["text/plain"] = plain
        total = _size(plain)
    for mime, item in data.items():
        size = _size(item)
        if total + size > MAX_BUNDLE_BYTES:
            left_out.append(mime)
            continue
        kept[mime] = item
        total += size
    return {"data": kept, "metadata": {m: v for m, v in metadata.items() if m in kept}, "left_out": left_out}
