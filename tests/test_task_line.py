"""The kernel's one-line task text (jupyter_taskq/taskline.py) against the cases that
labextension/test/taskline.test.ts holds the front end's to: one line, two renderers, the same answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_taskq.notebook.display import task_text
from jupyter_taskq.taskline import task_line

CASES = json.loads((Path(__file__).resolve().parents[1] / "labextension" / "test" / "taskline-cases.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["why"] for c in CASES])
def test_the_line_matches_the_shared_cases(case):
    assert task_line(case["task"], cut_at=case.get("cut_at")) == case["line"]


def test_a_handle_text_is_the_line():
    task = CASES[2]["task"]
    assert task_text(task) == task_line(task) == CASES[2]["line"]
