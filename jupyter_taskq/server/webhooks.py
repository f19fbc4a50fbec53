"""``callback_url``: the server POSTs ``{"data": task}`` once a task reaches its final status.

Signed like Beam's callbacks: ``X-Task-Timestamp`` and ``X-Task-Signature``, the
hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under the webhook secret, so a receiver
can check the sender and reject stale replays. A failed delivery is retried with
backoff; every attempt and its outcome show in the task's ``callback`` field.
Deliveries run concurrently, so a dead receiver delays nothing else.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit

from tornado.httpclient import HTTPRequest
from tornado.netutil import DefaultLoopResolver
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from ..statedir import FILE_MODE

log = logging.getLogger("jupyter_taskq.webhooks")

MAX_ATTEMPTS = 5
FIRST_BACKOFF = 1.0
REQUEST_TIMEOUT = 10.0
#: callback_done values
PENDING, DELIVERED, GAVE_UP = 0, 1, 2


class CallbackRefused(ValueError):
    """``callback_url`` points where webhooks may not go (the message says where and how to allow it)."""


class CallbackGuard:
    """Where webhooks may go: public addresses, and the networks of ``webhook_allowed_networks``.

    Checked twice: at submission for an address written in the URL (a clear ``400``), and at every
    delivery on each address the host name resolves to (so a name that resolves, or later
    re-resolves, to ``127.0.0.1``, ``10.x``, ``169.254.169.254`` ... is refused too)."""

    def __init__(self, allowed_networks=()):
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]

    def address_allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self.allowed):
            return True
        return ip.is_global and not ip.is_multicast

    def refusal(self, host: str) -> str:
        return (f"callback_url's host {host} is a loopback, link-local, private or otherwise non-public address, "
                "which webhooks may not reach; allow its network with c.TaskQueue.webhook_allowed_networks")

    def check_url(self, url: str) -> None:
        """At submission: the scheme, and an address (or ``localhost``) written in the URL."""
        parts = urlsplit(url)
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise CallbackRefused("option 'callback_url' must be an http:// or https:// URL with a host")
        written = host  # as the URL says it (localhost is checked as 127.0.0.1)
        if host == "localhost" or host.endswith(".localhost"):
            host = "127.0.0.1"
        try:
            allowed = self.address_allowed(host)
        except ValueError:
            return  # a host name: its addresses are checked at each delivery
        if not allowed:
            raise CallbackRefused(self.refusal(written))


class _GuardedResolver(DefaultLoopResolver):
    """Resolves as usual, then keeps only the addresses the guard allows (the connection uses these)."""

    guard: CallbackGuard

    async def resolve(self, host, port, family=0):
        addresses = await super().resolve(host, port, family)
        allowed = [a for a in addresses if self.guard.address_allowed(a[1][0])]
        if not allowed:
            raise CallbackRefused(self.guard.refusal(host))
        return allowed


def load_or_create_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        secret = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write(secret)
        return secret


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookSender:
    def __init__(self, service, secret: str, backoff: float = FIRST_BACKOFF, guard: CallbackGuard | None = None):
        self.guard = guard or CallbackGuard()
        resolver = _GuardedResolver()
        resolver.guard = self.guard
        # Our own client: its resolver enforces the guard on every connection; it never follows redirects.
        self.http = SimpleAsyncHTTPClient(force_instance=True, resolver=resolver)
        self.service = service
        self.store = service.store
        self.secret = secret
        self.backoff = backoff
        self._in_flight: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    def deliver_due(self, due: list[str] | None = None) -> None:
        """Start a delivery for every finished task whose callback has not gone out (called each second;
        ``due``: ``store.callbacks_due()``, already asked off the event loop)."""
        for task_id in self.store.callbacks_due() if due is None else due:
            if task_id not in self._in_flight:
                self._in_flight.add(task_id)
                task = asyncio.ensure_future(self._deliver(task_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, task_id: str) -> None:
        try:
            record = self.store.get(task_id)
            if record is None:
                return
            url = record["callback_url"]
            body = json.dumps({"data": self.service.to_json(record)}).encode()
            state = dict(record.get("callback") or {"attempts": []})
            for attempt in range(len(state["attempts"]) + 1, MAX_ATTEMPTS + 1):
                outcome = await self._post(url, body)
                state["attempts"].append(outcome)
                state["delivered"] = outcome["ok"]
                done = DELIVERED if outcome["ok"] else (GAVE_UP if attempt == MAX_ATTEMPTS else PENDING)
                self.store.update_fields(task_id, callback=state, callback_done=done)
                self.service.on_change(task_id)
                if done != PENDING:
                    return
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        except Exception:  # noqa: BLE001 - never let one receiver's trouble stop the others
            log.exception("webhook delivery for task %s failed", task_id)
        finally:
            self._in_flight.discard(task_id)

    async def _post(self, url: str, body: bytes) -> dict:
        timestamp = str(int(time.time()))
        at = time.time()
        try:
            self.guard.check_url(url)  # a row stored before the guard existed
            request = HTTPRequest(url, method="POST", body=body, request_timeout=REQUEST_TIMEOUT, connect_timeout=5,
                                  follow_redirects=False,
                                  headers={"Content-Type": "application/json", "X-Task-Timestamp": timestamp,
                                           "X-Task-Signature": sign(self.secret, timestamp, body)})
            response = await self.http.fetch(request, raise_error=False)
            code, error = response.code, None
            if code == 599 or response.error and not 300 <= code < 600:
                raise response.error or RuntimeError("no answer")
            if 300 <= code < 400:
                error = f"answered {code} (a redirect, which webhooks do not follow)"
            elif code >= 400:
                error = f"answered {code}"
        except CallbackRefused as exc:
            code, error = None, f"not sent: {exc}"
        except Exception as exc:  # noqa: BLE001 - refused, reset, timed out, no such host: all alike to the client
            # The task's owner sees no more than "no answer", so callback_url cannot probe which ports or
            # hosts the server reaches; the detail goes to the server's log only.
            log.info("webhook to %s for a task failed: %s: %s", url, type(exc).__name__, exc)
            code, error = None, "no HTTP answer from the receiver"
        return {"at": at, "status_code": code, "ok": code is not None and 200 <= code < 300, "error": error}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.http.close()
