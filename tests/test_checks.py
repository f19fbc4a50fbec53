"""The package passes its linter and type checker, as configured in pyproject.toml ([tool.ruff], [tool.mypy]).

Both run as subprocesses of this interpreter (``-m ruff``, ``-m mypy``, from the ``test`` extras), so the
test command is the one place a finding fails the build; a failure prints the findings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("command", [
    ("ruff", "check", "--no-cache", "jupyter_taskq"),
    ("mypy", "jupyter_taskq"),
], ids=["ruff", "mypy"])
def test_the_package_is_clean(command):
    done = _run(*command)
    findings = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, f"`{' '.join(command)}` found:\n{findings}"
