"""The error a refused request raises, apart from the client that raises it.

The output modules (mime.py, widgets.py) catch it while the client (client.py) shows its handles with
them; holding it here lets both import it without importing each other.
"""

from __future__ import annotations


class TaskqError(RuntimeError):
    """The server refused a request; the message is the server's."""

    def __init__(self, status_code: int, message: str):
        super().__init__(f"{message} (HTTP {status_code})")
        self.status_code = status_code
        self.server_message = message
