"""An extension that could not start says why, where its users look.

Jupyter Server logs an extension that fails to load as one warning among many and serves on
without its routes, so every ``taskq/api`` call answered a 404 page and nobody learnt the reason.
Instead the extension catches the failure (a bad option, a state directory it must not open, any
exception while it sets up), logs one CRITICAL line, starts nothing (no workers, no sweeps), and
answers every ``taskq/api/*`` request with 503 and ``{"message": <the reason>, "reason": NOT_STARTED}``:
the kernel client raises it and the Lab panel shows it. That ``reason`` tells it apart from a 503 of a
proxy in front of a restarting server, which the client waits out.
"""

from __future__ import annotations

import re

from jupyter_server.base.handlers import APIHandler
from tornado import web
from traitlets import TraitError

from ..statecheck import StateRefused

NOT_STARTED = "jupyter-taskq not started"  # the 503's reason; the kernel client (notebook/client.py) knows it


def failure_reason(exc: BaseException, option_names) -> str:
    """One line a person can act on: the option that caused it when one did, else the error."""
    text = " ".join(str(exc).split())
    if isinstance(exc, StateRefused):
        return text
    if isinstance(exc, TraitError):
        named = [n for n in option_names if re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", text)]
        option = max(named, key=len) if named else None
        if option and f"TaskQueue.{option}" not in text:
            return f"option TaskQueue.{option}: {text}"
        return text
    return f"{type(exc).__name__}: {text}"


def not_started_message(reason: str) -> str:
    return f"jupyter-taskq did not start: {reason}. Fix it and restart the Jupyter server."


@web.stream_request_body
class NotStartedHandler(APIHandler):
    """Every ``taskq/api/*`` path of a server whose queue did not start: 503 with the reason.

    The body of a submission is read and dropped (never kept), so the client sees the 503, not a
    connection reset halfway through its upload."""

    def initialize(self, message: str) -> None:
        self.message = message

    async def prepare(self):
        await super().prepare()
        if self.current_user is None:
            raise web.HTTPError(403, "authentication required (a Jupyter token or login cookie)")

    def data_received(self, chunk: bytes) -> None:
        pass

    def _answer(self, *args, **kwargs) -> None:
        raise web.HTTPError(503, self.message, reason=NOT_STARTED)  # APIHandler writes it as JSON

    get = head = post = put = patch = delete = _answer


def not_started_handlers(message: str) -> list[tuple]:
    """The one route of an extension that did not start (ExtensionApp puts base_url in front)."""
    return [(r"/taskq/api(?:/.*)?", NotStartedHandler, {"message": message})]


def refuse_if_not_started(handler: APIHandler) -> None:
    """In the API's own handlers: the queue failed while it started (app.py sets ``taskq_failure``)."""
    message = handler.settings.get("taskq_failure")
    if message:
        raise web.HTTPError(503, message, reason=NOT_STARTED)
