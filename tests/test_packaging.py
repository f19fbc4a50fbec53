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
