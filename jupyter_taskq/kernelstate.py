"""The kernel's logging and warning settings, carried to the task so its messages look as they would locally.

A notebook that ran ``logging.basicConfig(level=logging.INFO, format=...)`` or
``warnings.filterwarnings("ignore", category=FutureWarning)`` expects a queued call to log and warn
as a plain call would. At submit the kernel's root log level, the format of its root handler and its
warning filters go into the payload header (``"logging"``, ``"warnings"``: :func:`capture`); the task
process applies them before the function runs (:func:`apply`), every attempt anew, so a warm process
never keeps one attempt's settings for the next.

Standard library only: the task runner loads this file by path in another interpreter.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, cast

MAX_FILTERS = 200  # a kernel's filter list grows with each filterwarnings() of each re-run cell


def capture() -> dict:
    """In the kernel: ``{"logging": {...}, "warnings": [...]}`` for the payload header."""
    root = logging.getLogger()
    formatter = next((h.formatter for h in root.handlers if h.formatter is not None), None)
    log: dict[str, Any] = {"level": root.level}
    if formatter is not None:
        log["format"] = getattr(formatter, "_fmt", None)
        log["datefmt"] = formatter.datefmt
        style = getattr(formatter, "_style", None)
        styles: dict[type, str] = {logging.StrFormatStyle: "{", logging.StringTemplateStyle: "$"}
        log["style"] = styles.get(type(style), "%")
    filters = []
    for action, message, category, module, lineno in warnings.filters[:MAX_FILTERS]:
        category = cast(type, category)  # a class: filterwarnings() refuses anything else
        filters.append([action, getattr(message, "pattern", message) or "",
                        f"{category.__module__}.{category.__qualname__}", getattr(module, "pattern", module) or "",
                        lineno])
    return {"logging": log, "warnings": filters}


#: The handler :func:`apply` gave the task's root logger (replaced, never stacked, in a warm process).
_handler: logging.Handler | None = None


def apply(header: dict) -> None:
    """In the task process, before the function runs: the kernel's log level and format, its warning filters.
    A payload without them (an older client) changes nothing; a setting that fails to apply is skipped."""
    global _handler
    log = header.get("logging")
    if isinstance(log, dict):
        root = logging.getLogger()
        if _handler is not None:
            root.removeHandler(_handler)
            _handler = None
        try:
            root.setLevel(log.get("level", logging.WARNING))
        except (TypeError, ValueError):
            pass
        if log.get("format"):
            try:
                _handler = logging.StreamHandler(sys.stderr)  # the attempt's log
                _handler.setFormatter(logging.Formatter(log["format"], log.get("datefmt"), log.get("style", "%")))
                root.addHandler(_handler)
            except (TypeError, ValueError):
                _handler = None
    filters = header.get("warnings")
    if isinstance(filters, list):
        warnings.resetwarnings()
        for entry in filters[:MAX_FILTERS]:
            try:
                action, message, category, module, lineno = entry
                warnings.filterwarnings(action, message, _category(category), module, int(lineno), append=True)
            except Exception:  # noqa: BLE001 - a category the task cannot import, a malformed entry
                continue


def _category(dotted: str) -> type:
    """The class, from a module the task has imported already (the call's own unpickling imports what it uses):
    importing a library only to filter its warnings would cost every task its import time."""
    module, _, name = dotted.rpartition(".")
    found = sys.modules[module or "builtins"]
    for part in name.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and issubclass(found, Warning)):
        raise TypeError(f"{dotted} is not a Warning class")
    return found
