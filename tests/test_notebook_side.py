"""The kernel side on its own: import cost, the magic's name capture, and finding the server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from jupyter_taskq.notebook import discovery
from jupyter_taskq.notebook.magic import capture, cell_names


def test_importing_the_kernel_side_loads_no_server_or_worker_code():
    """A kernel pays only for the client: no Jupyter server, Tornado web stack, Huey or worker modules
    (the import time itself is measured in bench/, not asserted here)."""
    code = ("import sys, json, jupyter_taskq; from jupyter_taskq import task_queue, tasks; "
            "print(json.dumps(sorted(sys.modules)))")
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", code], text=True)))
    heavy = {"jupyter_server", "jupyter_server.serverapp", "tornado.web", "huey", "jupyter_taskq.server",
             "jupyter_taskq.worker", "redis"}
    assert not heavy & loaded, sorted(heavy & loaded)


def test_cell_free_names_and_assigned_names():
    source = "model = build(cfg)\nacc = fit(model, data)\nimport numpy as np\nfor i in range(3):\n    total = i\n"
    loaded, assigned = cell_names(source)
    assert loaded[:5] == ["build", "cfg", "fit", "model", "data"]
    assert assigned == ["np", "model", "acc", "i", "total"]
    namespace = {"build": len, "cfg": [1], "data": 2, "unused": 3, "In": [], "_hidden": 1, "range": range}
    free, _ = capture(source, namespace)
    assert free == {"build": len, "cfg": [1], "data": 2}  # builtins, IPython's own and unused names stay home


def test_environment_wins(monkeypatch):
    monkeypatch.setenv("JUPYTER_TASKQ_URL", "http://example.invalid:1/")
    monkeypatch.setenv("JUPYTER_TASKQ_TOKEN", "t")
    assert discovery.find_server(start_private=False) == ("http://example.invalid:1/", "t")


def test_parent_server_runtime_file_is_picked_by_pid(monkeypatch, tmp_path):
    monkeypatch.delenv("JUPYTER_TASKQ_URL", raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    for pid, port in ((111, 1111), (222, 2222)):
        (tmp_path / f"jpserver-{pid}.json").write_text(json.dumps({"url": f"http://127.0.0.1:{port}/", "token": str(pid)}))
    monkeypatch.setenv("JPY_PARENT_PID", "222")
    assert discovery.from_parent_server() == ("http://127.0.0.1:2222/", "222")
    monkeypatch.setenv("JPY_PARENT_PID", "333")
    assert discovery.from_parent_server() is None


def test_private_server_is_started_once_and_reused(monkeypatch, tmp_path, capsys):
    for name in ("JUPYTER_TASKQ_URL", "JUPYTER_TASKQ_TOKEN", "JPY_PARENT_PID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    url, token = discovery.find_server()
    info = json.loads((tmp_path / "runtime" / discovery.PRIVATE_FILE).read_text())
    try:
        assert "started a private one" in capsys.readouterr().err
        assert discovery.find_server() == (url, token)  # reused, not a second server
        assert "started" not in capsys.readouterr().err
        from jupyter_taskq.notebook.client import Client

        assert Client(url, token).submit(abs, (-3,)).result(timeout=60) == 3
    finally:
        os.killpg(info["pid"], signal.SIGTERM)
