"""image=: a task runs in the Python environment it asks for, built once with uv and cached (issue 23).

Real builds from this machine's package sources (pip's configuration, translated for uv); small
pinned packages that install here (six, packaging, toolz, attrs)."""

from __future__ import annotations

import concurrent.futures
import json
import sys
import time

import pytest

from conftest import TaskqServer, wait_for
from jupyter_taskq import Image
from jupyter_taskq.notebook.client import TaskFailed


def notebook_function(source: str):
    """A function defined as in a notebook (module __main__), so it travels by value."""
    namespace = {"__name__": "__main__"}
    exec(source, namespace)  # noqa: S102 - test-only
    return next(v for k, v in namespace.items() if callable(v) and not k.startswith("__"))


versions = notebook_function(
    "def versions(name='packaging'):\n"
    "    import importlib.metadata, sys, os\n"
    "    return importlib.metadata.version(name), sys.executable, os.environ.get('IMAGE_MARK')\n")
make_version = notebook_function(
    "def make_version(text):\n"
    "    import packaging.version\n"
    "    return packaging.version.Version(text)\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    server = TaskqServer(root, gpus=[], cpu_workers=2, image_dir=str(root / "images")).start()
    yield server
    server.close()


def test_two_versions_of_one_package_run_side_by_side(server):
    client = server.client()
    old = client.submit(versions, image=Image(python_packages=["packaging==21.0"], env_vars={"IMAGE_MARK": "old"}))
    new = client.submit(versions, image=Image(python_packages=["packaging==24.0"]))
    assert old.result(timeout=240)[0::2] == ("21.0", "old")
    version, python, mark = new.result(timeout=240)
    assert (version, mark) == ("24.0", None)
    assert python != sys.executable
    env = old.environment()
    assert "packaging==21.0" in env["packages"] and len(env["hash"]) == 64
    assert env["spec"]["python_packages"] == ["packaging==21.0"]
    assert "building image" in old.logs()
    images = {i["hash"]: i for i in client.stats()["images"]}
    assert env["hash"] in images and images[env["hash"]]["bytes"] > 0 and images[env["hash"]]["last_used"]
