"""``jupyter taskq hub-service``: the hub-wide queue, started as JupyterHub runs a managed service.

A Jupyter server with the queue's extension (``TaskQueue`` with ``hub_mode=service``, so its tenancy is
:class:`.hubtenancy.HubTenancy`) that authenticates with JupyterHub's own service auth and owns the machine's
workers. See docs/jupyterhub.md for the hub's configuration.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import urlparse

#: Set in the service's environment by :func:`main`: the extension entry point then loads the queue, never
#: the forwarding app, whatever ``$JUPYTER_TASKQ_HUB_SERVICE`` says.
SERVICE_MARK = "JUPYTER_TASKQ_HUB_MODE"


def main(argv: list[str] | None = None) -> int:
    """``jupyter taskq hub-service [--TaskQueue.option=value ...]``: the hub-wide queue, as JupyterHub runs it.

    Listens where JupyterHub says (``$JUPYTERHUB_SERVICE_URL``, under ``$JUPYTERHUB_SERVICE_PREFIX``),
    authenticates with the hub, and starts the machine's workers. Refuses to start outside JupyterHub."""
    argv = list(sys.argv[1:] if argv is None else argv)
    url, prefix = os.environ.get("JUPYTERHUB_SERVICE_URL"), os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if not (url and prefix and os.environ.get("JUPYTERHUB_API_TOKEN")):
        print("jupyter taskq hub-service: not started by JupyterHub ($JUPYTERHUB_SERVICE_URL, "
              "$JUPYTERHUB_SERVICE_PREFIX and $JUPYTERHUB_API_TOKEN are unset): run it as a managed service, "
              "see docs/jupyterhub.md", file=sys.stderr)
        return 2
    where = urlparse(url)
    os.environ[SERVICE_MARK] = "service"
    from jupyter_server.serverapp import ServerApp

    ServerApp.launch_instance(argv=[
        f"--ServerApp.ip={where.hostname}", f"--ServerApp.port={where.port or 80}", f"--ServerApp.base_url={prefix}",
        "--ServerApp.open_browser=False", "--ServerApp.port_retries=0",
        "--ServerApp.identity_provider_class=jupyterhub.singleuser.extension.JupyterHubIdentityProvider",
        "--TaskQueue.hub_mode=service", *argv])
    return 0


if __name__ == "__main__":
    sys.exit(main())
