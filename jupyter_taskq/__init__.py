"""jupyter-taskq: send notebook work to a persistent, GPU-aware task queue.

Importing this package stays cheap (no server or worker module is imported), so a
kernel pays almost nothing for ``import jupyter_taskq``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .status import TaskStatus  # noqa: E402

__all__ = ["TaskStatus", "connect", "Client", "TaskHandle", "TaskFailed", "__version__"]


def __getattr__(name):
    if name in ("connect", "Client", "TaskHandle", "TaskFailed", "RemoteTraceback"):
        from .notebook import client

        return getattr(client, name)
    raise AttributeError(f"module 'jupyter_taskq' has no attribute {name!r}")


def _jupyter_server_extension_points():
    from .server.app import TaskQueue

    return [{"module": "jupyter_taskq", "app": TaskQueue}]
