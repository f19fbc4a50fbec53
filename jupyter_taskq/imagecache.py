"""The image cache's settings and listing, shared by the server (``GET stats``) and the workers.

Standard library only. Workers build into it (:mod:`jupyter_taskq.worker.images`, which describes the
layout); the server only reads the records: ``<image_dir>/<hash>.json``, whose mtime is the last use.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

IMAGE_DIR_ENV = "JUPYTER_TASKQ_IMAGE_DIR"
CACHE_BYTES_ENV = "JUPYTER_TASKQ_IMAGE_CACHE_BYTES"
DEFAULT_CACHE_BYTES = 20 * 1024 ** 3
MIN_CACHE_BYTES, MAX_CACHE_BYTES = 0, 2 ** 53  # 0: keep nothing but the images in use


def check_cache_bytes(value) -> int:
    """``image_cache_bytes``, the one check (the server's trait and the worker's flag both use it)."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValueError(f"image_cache_bytes must be an integer number of bytes, got {value!r}") from None
    if not MIN_CACHE_BYTES <= number <= MAX_CACHE_BYTES:
        raise ValueError(f"image_cache_bytes must be between {MIN_CACHE_BYTES} and {MAX_CACHE_BYTES}, got {number}")
    return number


def image_dir(state_root: Path | str, configured: str | None = None) -> Path:
    """``c.TaskQueue.image_dir`` (``--image-dir``), else ``<state_dir>/images``."""
    return Path(configured or os.environ.get(IMAGE_DIR_ENV) or Path(state_root) / "images")


def cache_bytes() -> int:
    return check_cache_bytes(os.environ.get(CACHE_BYTES_ENV) or DEFAULT_CACHE_BYTES)


def read_json(path: Path) -> dict | None:
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def last_used(directory: Path, digest: str) -> float | None:
    try:
        return os.stat(Path(directory) / f"{digest}.json").st_mtime
    except OSError:
        return None


def list_images(directory: Path) -> list[dict]:
    """The cached images: ``{"hash", "bytes", "last_used", "python_version"}``, most recently used first."""
    images = []
    for meta_path in glob.glob(str(Path(directory) / "*.json")):
        record = read_json(Path(meta_path))
        if not record or not isinstance(record.get("hash"), str):
            continue
        images.append({"hash": record["hash"], "bytes": record.get("bytes"),
                       "last_used": last_used(directory, record["hash"]),
                       "python_version": record.get("python_version")})
    return sorted(images, key=lambda i: -(i["last_used"] or 0))
