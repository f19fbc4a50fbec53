"""The task-side API (``progress()``, ``Output``, ``on_start_value()``) importable inside any image.

A task in ``image=`` runs in an interpreter whose packages are the image's: jupyter_taskq is not one
of them, and installing it with its dependencies (Jupyter Server, tornado, huey, ...) would put dozens
of packages the user never asked for next to theirs, where their pins may conflict. What a task uses
of jupyter_taskq needs only the standard library, so the worker writes a copy of just those modules
(the package's ``__init__`` and the modules it imports) into a folder of ``image_dir``, named by a hash
of their content, and runner.py appends that folder to the image's ``sys.path``: after the image's own
packages, so an image (or a kernel's interpreter) that installs jupyter_taskq itself keeps its own.

Why not ``pip install --no-deps jupyter-taskq`` into each image: it needs a wheel of this very worker's
version (an editable or source install has none: a build per worker version, Node.js for the Lab
extension or a skip), it changes the image's package list and hash with each worker upgrade, and the
rest of the package would be importable there and fail deep inside on a missing dependency. A copy of
five files costs ~1 ms once per worker version and nothing per attempt (docs/images.md has numbers).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

#: The package's standard-library-only modules that ``import jupyter_taskq`` and the task-side API load.
MODULES = ("__init__.py", "status.py", "taskio.py", "image.py", "tasklog.py", "checkpoints.py")  # what __init__ imports
_NOTE = '''

# -- written by jupyter_taskq/worker/taskside.py: in an image= only the task-side API is here ------------------
def __getattr__(name):
    raise AttributeError(
        f"jupyter_taskq.{name} is not available inside an image=: only the task-side API (progress, Output, "
        f"on_start_value, TaskStatus, Image) is; add jupyter-taskq to the image's python_packages for the rest")
'''


def _sources() -> dict[str, bytes]:
    package = Path(__file__).resolve().parent.parent
    files = {name: (package / name).read_bytes() for name in MODULES}
    files["__init__.py"] += _NOTE.encode()
    return files


def task_side_path(directory: Path) -> str | None:
    """The folder (in ``image_dir``) that holds the task-side ``jupyter_taskq``; made once per content.
    None if it cannot be made (a read-only ``image_dir`` that lacks it): the task then imports what
    the image has."""
    try:
        files = _sources()
    except OSError:
        return None
    digest = hashlib.sha256(b"".join(name.encode() + b"\0" + data for name, data in sorted(files.items())))
    folder = directory / f".taskside-{digest.hexdigest()[:16]}"
    if (folder / "jupyter_taskq" / "__init__.py").exists():
        return str(folder)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".taskside-tmp-", dir=directory))
        try:
            os.chmod(staging, 0o755)  # tasks run as their owners (a hub) read it; nobody but the worker writes
            package = staging / "jupyter_taskq"
            package.mkdir(mode=0o755)
            for name, data in files.items():
                (package / name).write_bytes(data)
                os.chmod(package / name, 0o644)
            try:
                os.rename(staging, folder)  # atomic: another worker's equal copy may have won; theirs is the same
            except OSError:
                if not (folder / "jupyter_taskq" / "__init__.py").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError:
        return None
    return str(folder)
