"""The one line that sums a task up: ``Task train · FAILED · attempt 2 of 3 · on gpu0 · ValueError: bad  [id]``.

The kernel writes it (a handle's text and HTML, notebook/display.py) and so does the front end (an output's
text and HTML once the kernel is gone, labextension/src/outputmodel.ts). It is written once, here, as data:
tsgen.py copies :data:`TASK_LINE` into labextension/src/generated.ts, and each side fills it in with a
renderer that knows only this small template language, not the line (labextension/src/taskline.ts is the
other renderer; tests/test_task_line.py holds the two to the same answers).

* ``{path}``: a field of the task JSON; ``error.type`` is a field of a field.
* ``{a|b}``: ``a``, or ``b`` where ``a`` is empty.
* ``{path+N}``: a number plus ``N``.
* ``when``: the part is written only where each condition holds: ``path`` (not empty) or ``path!=VALUE``.
* ``cut``: fields that a list line (a group's list of tasks) cuts to :data:`LIST_ERROR_CHARS`, then ``…``.
"""

from __future__ import annotations

import re
from typing import Any

TASK_LINE: dict[str, Any] = {
    "separator": " · ",
    "parts": [
        {"text": "Task {name|id}"},
        {"text": "{status}"},
        {"text": "attempt {attempt} of {max_retries+1}", "when": ["attempt"]},
        {"text": "on {worker}", "when": ["worker"]},
        {"text": "{error.type}: {error.message}", "when": ["error", "status!=COMPLETE"], "cut": ["error.message"]},
    ],
    "end": "  [{id}]",
}

#: A group's HTML lists this many tasks, and says so when it has more: few enough that a displayed group of
#: any size adds under 2 KB to the saved notebook.
LIST_LIMIT = 10
#: Characters of an error message a group's list line keeps.
LIST_ERROR_CHARS = 80

_FIELD = re.compile(r"\{([^{}]+)\}")
_PLUS = re.compile(r"^(.*)\+(\d+)$")


def task_line(task: dict, cut_at: int | None = None) -> str:
    """The task's line; ``cut_at``: the length a list line cuts the ``cut`` fields to."""
    parts = [_fill(part["text"], task, part.get("cut", []) if cut_at is not None else [], cut_at)
             for part in TASK_LINE["parts"] if all(_holds(condition, task) for condition in part.get("when", []))]
    return TASK_LINE["separator"].join(parts) + _fill(TASK_LINE["end"], task, [], None)


def _fill(template: str, task: dict, cut: list[str], cut_at: int | None) -> str:
    def value(match: re.Match) -> str:
        text = _text(_value(match.group(1), task))
        if match.group(1) in cut and cut_at is not None and len(text) > cut_at:
            return text[:cut_at] + "…"
        return text

    return _FIELD.sub(value, template)


def _value(expression: str, task: dict) -> Any:
    plus = _PLUS.match(expression)
    if plus:
        number = _value(plus.group(1), task)
        return (number or 0) + int(plus.group(2))
    for path in expression.split("|"):
        found = _field(path, task)
        if found not in (None, ""):
            return found
    return None


def _field(path: str, task: Any) -> Any:
    for key in path.split("."):
        task = task.get(key) if isinstance(task, dict) else None
    return task


def _holds(condition: str, task: dict) -> bool:
    path, unequal, value = condition.partition("!=")
    found = _field(path, task)
    return found != value if unequal else bool(found)


def _text(value: Any) -> str:
    return "" if value is None else str(value)
