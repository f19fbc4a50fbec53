"""The lab extension's TypeScript unit tests (vitest, labextension/test/) run as part of pytest, so the
README's one test command covers them. They need Node.js and labextension/node_modules, which
`pip install .` leaves behind when it builds the extension; without them the test is skipped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

LABEXTENSION = Path(__file__).resolve().parents[1] / "labextension"


def test_typescript_data_layer_unit_tests():
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    if not (LABEXTENSION / "node_modules" / "vitest").exists():
        pytest.skip("labextension/node_modules is missing (run `npm ci` in labextension/, or `pip install .`)")
    out = subprocess.run([npm, "test"], cwd=LABEXTENSION, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert " passed" in out.stdout
