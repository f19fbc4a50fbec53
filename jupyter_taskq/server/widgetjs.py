"""Serves the notebook widget's bundle (jupyter_taskq/widgetbundle.py) at ``{base_url}taskq/static/``.

The widget's synced state carries only a small loader (jupyter_taskq/notebook/widgets.py) that imports
this file from the page's server, so no notebook saves the widget's code. A package installed without
Node.js (SKIP_JUPYTER_BUILDER=1) has no bundle: this answers 404 and the widget shows its line of text.
Behind the server's login like every other file.
"""

from __future__ import annotations

import re

from jupyter_server.base.handlers import AuthenticatedFileHandler

from .. import widgetbundle


class WidgetBundleHandler(AuthenticatedFileHandler):
    """The bundle as JavaScript (a module import insists on the type); the loader's ``?v=`` busts caches."""

    def set_extra_headers(self, path):
        super().set_extra_headers(path)
        self.set_header("Content-Type", "text/javascript; charset=utf-8")


def handlers() -> list[tuple]:
    folder, name = widgetbundle.URL.rsplit("/", 1)
    return [(f"/{folder}/({re.escape(name)})", WidgetBundleHandler, {"path": str(widgetbundle.DIRECTORY)})]
