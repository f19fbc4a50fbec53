"""After `pip install .` the extension is enabled with no further step."""

import subprocess
import sys


def test_server_extension_is_enabled_after_install():
    out = subprocess.run([sys.executable, "-m", "jupyter_server", "extension", "list"], capture_output=True,
                         text=True, timeout=120)
    text = out.stdout + out.stderr
    assert "jupyter_taskq" in text and "enabled" in text.split("jupyter_taskq", 1)[1].splitlines()[0]


def test_worker_command_is_installed():
    out = subprocess.run(["jupyter", "taskq", "worker", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--cpu-workers" in out.stdout


def test_kernel_side_import_is_light():
    code = "import sys, jupyter_taskq.notebook.client; print(sorted(m for m in sys.modules if m.startswith(('jupyter_server', 'tornado', 'huey'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


def _labextension_list() -> str:
    """`jupyter labextension list` of this interpreter's environment (not whichever `jupyter` is on PATH)."""
    import re
    from pathlib import Path

    jupyter = Path(sys.executable).with_name("jupyter")
    cmd = [str(jupyter), "labextension", "list"] if jupyter.exists() else [sys.executable, "-m",
                                                                         "jupyterlab.labextensions", "list"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)


def test_lab_extension_is_enabled_after_install():
    text = _labextension_list()
    lines = [line for line in text.splitlines() if "jupyter-taskq-labextension" in line]
    assert lines, f"the Task Queue lab extension is not installed:\n{text}"
    assert "enabled" in lines[0] and "OK" in lines[0], lines[0]


def test_lab_extension_is_prebuilt_into_share():
    """The wheel carries the built bundle: no Node.js is needed where it is installed."""
    from pathlib import Path

    from jupyter_core.paths import jupyter_path

    found = [Path(d) / "jupyter-taskq-labextension" for d in jupyter_path("labextensions")
             if (Path(d) / "jupyter-taskq-labextension" / "package.json").exists()]
    assert found, "no jupyter-taskq-labextension in any labextensions directory"
    assert list((found[0] / "static").glob("remoteEntry.*.js")), f"{found[0]} has no static/remoteEntry.*.js"
