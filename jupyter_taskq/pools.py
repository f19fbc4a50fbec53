"""Pools: which workers may take a task (``cpu``, ``gpu``, or ``gpu:<model>`` for a GPU model).

A pool is the routing of the queue, the same whichever backend holds it: each backend keeps one
queue per pool (``backends.base.Backend.open_queue``) and one work bell per pool.
"""

from __future__ import annotations

CPU_POOL = "cpu"
GPU_POOL = "gpu"
POOLS = (CPU_POOL, GPU_POOL)  # always there; a GPU model adds a pool "gpu:<model>" for tasks asking for it
MODEL_POOL_PREFIX = GPU_POOL + ":"


def model_pool(model: str) -> str:
    """The pool of tasks that ask for GPU model ``model`` (a name its workers report)."""
    return MODEL_POOL_PREFIX + model


def pool_model(pool: str) -> str | None:
    return pool[len(MODEL_POOL_PREFIX):] if pool.startswith(MODEL_POOL_PREFIX) else None


def check_pool(pool: str) -> str:
    if pool not in POOLS and not (pool_model(pool) or "").strip():
        raise ValueError(f"unknown pool {pool!r}")
    return pool
