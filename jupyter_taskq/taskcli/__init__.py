"""The task CLI (``jupyter taskq ls|show|logs|cancel|retry|outputs|download|stats|top``): REST only, like the
kernel side, so it never imports ``server/`` or ``worker/`` (see :mod:`.main`)."""
