"""Kernels a Jupyter server starts find the task queue with no setup: its URL and token in their environment.

Used by the queue's extension app and by the forwarding app of a user's server under JupyterHub alike.
"""

from __future__ import annotations


def export_to_kernels(serverapp) -> None:
    """Put ``JUPYTER_TASKQ_URL``/``_TOKEN`` into every kernel's environment, computed per kernel start, not at
    load time: the port is only final once bound."""
    sessions = serverapp.session_manager
    plain_env = sessions.get_kernel_env

    def get_kernel_env(path, name=None):
        env = plain_env(path, name)
        env["JUPYTER_TASKQ_URL"] = serverapp.connection_url  # this server, whatever its own env says
        env["JUPYTER_TASKQ_TOKEN"] = serverapp.identity_provider.token or ""
        env["JUPYTER_TASKQ_SAME_ORIGIN"] = "1"  # the notebook page reaches this API with its cookie
        return env

    sessions.get_kernel_env = get_kernel_env
