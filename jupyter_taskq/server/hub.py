"""``python -m jupyter_taskq.server.hub``: the old name of the hub service's launcher (now
:mod:`jupyter_taskq.hub.service`), kept so existing hub configurations and ``jupyter taskq hub-service`` work."""

from __future__ import annotations

import sys

from ..hub.service import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
