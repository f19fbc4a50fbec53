"""Who a request (or a running task) is, as the tenancy worked it out: the owner of what it submits."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    owner: str
    sees_all: bool  # an admin (or a single-user server's own user): every owner's tasks
    groups: tuple[str, ...] = ()
