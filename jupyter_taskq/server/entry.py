"""Which extension app a Jupyter server loads for ``jupyter_taskq``: the queue, or the hub forwarding app.

One server-extension entry point (``jupyter_taskq._jupyter_server_extension_points``, enabled by
``jupyter-config/jupyter_server_config.d/jupyter_taskq.json``) serves every install: a user's server under
JupyterHub whose queue is the hub service (``$JUPYTER_TASKQ_HUB_SERVICE`` in ``c.Spawner.environment``, or
``c.TaskQueue.hub_service`` in a config file or on the command line) loads
:class:`~jupyter_taskq.server.forwarding.HubForwardingApp`; any other server, the hub service included, loads
the queue's :class:`~jupyter_taskq.server.app.TaskQueue`.
"""

from __future__ import annotations

import os
import sys

from ..hub.service import SERVICE_MARK


def extension_app() -> type:
    if forwards_to_hub():
        from .forwarding import HubForwardingApp

        return HubForwardingApp
    from .app import TaskQueue

    return TaskQueue


def forwards_to_hub(argv: list[str] | None = None) -> bool:
    """A hub service's name is set for this server, and this server is not the hub service itself."""
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get(SERVICE_MARK) == "service" or "--TaskQueue.hub_mode=service" in argv:
        return False
    on_command_line = [a.split("=", 1)[1] for a in argv if a.startswith("--TaskQueue.hub_service=")]
    if on_command_line:
        return bool(on_command_line[-1])
    return bool(_configured_hub_service() or os.environ.get("JUPYTER_TASKQ_HUB_SERVICE"))


def _configured_hub_service() -> str:
    """``c.TaskQueue.hub_service`` from the server's config files (read again by the app itself, as every
    extension app does), in jupyter_server's order: the current folder first, then the user's, then the system's."""
    from jupyter_core.paths import jupyter_config_path
    from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader

    for folder in [os.getcwd(), *jupyter_config_path()]:
        for loader in (PyFileConfigLoader, JSONFileConfigLoader):
            suffix = ".py" if loader is PyFileConfigLoader else ".json"
            if not os.path.isfile(os.path.join(folder, "jupyter_server_config" + suffix)):
                continue
            try:
                config = loader("jupyter_server_config" + suffix, path=folder).load_config()
            except Exception:  # noqa: BLE001 - the server reports a broken config file itself
                continue
            if "hub_service" in config.get("TaskQueue", {}):
                return str(config.TaskQueue.hub_service)
    return ""
