"""Tenancy: who is asking and which tasks they may see, and the multi-user layer under JupyterHub (issue 15).

The server's handlers see only the interface in :mod:`.tenancy` (``identify``, ``guard``, ``check_route``,
``scope``, ``admit``). A personal server runs :class:`.tenancy.SingleUserTenancy`, which scopes nothing; the
hub-wide queue (``jupyter taskq hub-service``, :mod:`.service`) runs :class:`.hubtenancy.HubTenancy`: owners
from JupyterHub's auth, admins by JupyterHub scope, quotas, the fair-share policy file. A user's own server
under the hub runs :class:`jupyter_taskq.server.forwarding.HubForwardingApp` instead of the queue: it forwards
``taskq/api``.
"""
