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
import json
import logging
import os
import secrets
import time
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from ..statedir import FILE_MODE

log = logging.getLogger("jupyter_taskq.webhooks")

MAX_ATTEMPTS = 5
FIRST_BACKOFF = 1.0
REQUEST_TIMEOUT = 10.0
#: callback_done values
PENDING, DELIVERED, GAVE_UP = 0, 1, 2


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
    def __init__(self, service, secret: str, backoff: float = FIRST_BACKOFF):
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
        request = HTTPRequest(url, method="POST", body=body, request_timeout=REQUEST_TIMEOUT, connect_timeout=5,
                              headers={"Content-Type": "application/json", "X-Task-Timestamp": timestamp,
                                       "X-Task-Signature": sign(self.secret, timestamp, body)})
        at = time.time()
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
            code, error = response.code, None if response.code < 400 else (response.reason or "")
            if response.error and code == 599:
                code, error = None, str(response.error)
        except Exception as exc:  # noqa: BLE001 - connection refused, DNS, ...
            code, error = None, f"{type(exc).__name__}: {exc}"
        return {"at": at, "status_code": code, "ok": code is not None and 200 <= code < 300, "error": error}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
