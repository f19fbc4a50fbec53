"""jupyter-taskq: send notebook work to a persistent, GPU-aware task queue.

Importing this package stays cheap (no server or worker module is imported), so a
kernel pays almost nothing for ``import jupyter_taskq``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .status import TaskStatus  # noqa: E402
from .taskio import Output, gpus, on_start_value, progress  # noqa: E402  (used inside tasks; stdlib only)
from .image import Image  # noqa: E402  (image=: stdlib only)
from .checkpoints import checkpoint, checkpoint_requested, last_checkpoint  # noqa: E402  (stdlib until used)

__all__ = ["TaskStatus", "Image", "Output", "progress", "on_start_value", "gpus", "checkpoint", "last_checkpoint",
           "checkpoint_requested", "task_queue", "tasks", "connect", "Client", "TaskHandle", "TaskGroup", "TaskFailed",
           "schedules", "Schedule", "__version__"]

_LAZY = {
    "connect": "client", "Client": "client", "TaskHandle": "client", "TaskFailed": "client",
    "RemoteTraceback": "client", "TaskqError": "errors",
    "task_queue": "decorator", "TaskGroup": "group", "tasks": "group",
    "schedules": "schedules", "Schedule": "schedules",
}


def __getattr__(name):
    """The kernel-side API, imported on first use so `import jupyter_taskq` stays cheap."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".notebook.{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'jupyter_taskq' has no attribute {name!r}")


def load_ipython_extension(ipython):
    """`%load_ext jupyter_taskq`: the %%task_queue and %task_pull magics."""
    from .notebook.magic import load_ipython_extension as load

    load(ipython)


def _jupyter_labextension_paths():
    """The prebuilt Lab extension (the Task Queue panel), for `jupyter labextension develop`."""
    return [{"src": "labextension", "dest": "jupyter-taskq-labextension"}]


def _jupyter_server_extension_points():
    """The queue's app, or in a user's server under JupyterHub the app that forwards to the hub service."""
    from .server.entry import extension_app

    return [{"module": "jupyter_taskq", "app": extension_app()}]
