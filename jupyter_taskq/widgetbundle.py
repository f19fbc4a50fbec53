"""Where the notebook widget's code lives: one bundle built from labextension/src (``npm run build:widget``)
into the package's ``labextension/static``, served by the server extension at ``{base_url}`` + :data:`URL`
(jupyter_taskq/server/widgetjs.py) and imported by the widget's loader (jupyter_taskq/notebook/widgets.py).
Here so both sides name it without the kernel side importing the server."""

from __future__ import annotations

import hashlib
from pathlib import Path

DIRECTORY = Path(__file__).resolve().parent / "labextension" / "static"
NAME = "taskq-widget.js"
PATH = DIRECTORY / NAME
#: The bundle's URL relative to the page's base URL.
URL = f"taskq/static/{NAME}"


def version() -> str:
    """A short hash of the built bundle ("none" when it was not built): a new bundle is a new URL."""
    try:
        return hashlib.sha256(PATH.read_bytes()).hexdigest()[:12]
    except OSError:
        return "none"
