"""A source install on a machine without Node.js says what is missing and how to go on.

The build runs as `pip install .` runs it (pip wheel of a copy of the checkout, without its built Lab
extension) with a PATH that has no node or npm: it stops with one line naming the Lab extension and
Node.js >= 20.19 instead of a bare metadata-generation-failed, and SKIP_JUPYTER_BUILDER=1 installs the
Python package without the Lab panel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("hatchling")  # built without isolation: no index needed, and much quicker
pytest.importorskip("hatch_jupyter_builder")

REPO = Path(__file__).resolve().parents[1]


def source_without_built_extension(tmp_path: Path) -> Path:
    copy = tmp_path / "checkout"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md", "build_labextension.py"):
        shutil.copy(REPO / name, copy / name)
    shutil.copytree(REPO / "jupyter-config", copy / "jupyter-config")
    shutil.copytree(REPO / "labextension", copy / "labextension",
                    ignore=shutil.ignore_patterns("node_modules", "lib", "*.tsbuildinfo"))
    shutil.copytree(REPO / "jupyter_taskq", copy / "jupyter_taskq", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(copy / "jupyter_taskq" / "labextension", ignore_errors=True)  # the build output
    return copy


def build_wheel(source: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    no_node = {k: v for k, v in os.environ.items() if k != "SKIP_JUPYTER_BUILDER"}
    no_node["PATH"] = str(Path(sys.executable).parent)  # this venv's bin: python, pip, no node or npm
    assert shutil.which("node", path=no_node["PATH"]) is None and shutil.which("npm", path=no_node["PATH"]) is None
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        capture_output=True, text=True, env={**no_node, **env}, timeout=300)


def test_without_node_the_install_says_what_the_lab_extension_needs(tmp_path):
    source = source_without_built_extension(tmp_path)
    built = build_wheel(source, tmp_path / "out")
    output = built.stdout + built.stderr
    assert built.returncode != 0, output[-3000:]
    line = next((line for line in output.splitlines() if "jupyter-taskq: the JupyterLab extension" in line), None)
    assert line is not None, output[-3000:]
    assert "Node.js >= 20.19" in line and "node and npm are not on the PATH" in line and "SKIP_JUPYTER_BUILDER=1" in line
    assert "Could not find cmd" not in output


def test_skipping_the_lab_extension_installs_the_python_package(tmp_path):
    source = source_without_built_extension(tmp_path)
    built = build_wheel(source, tmp_path / "out", SKIP_JUPYTER_BUILDER="1")
    assert built.returncode == 0, (built.stdout + built.stderr)[-3000:]
    wheel, = (tmp_path / "out").glob("jupyter_taskq-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "jupyter_taskq/server/app.py" in names
    assert not [n for n in names if "remoteEntry" in n]  # no Lab panel, as the message said
