"""What the parts of :class:`~.TaskService` share: the attributes its ``__init__`` sets, declared once.

Every part (``submit.py``, ``views.py``, ``files.py``, ``housekeeping.py``) inherits :class:`ServiceParts`, so
a method of one part may use the store, queues and state directory, and call another part's methods, with
their types known. Nothing here runs: the attributes are annotations only (set by ``TaskService.__init__``)
and the other parts' methods are declared for the type checker alone.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...objectstore import ObjectStore
    from ...statedir import StateDir
    from ...backends.taskstore import TaskStore
    from ...worker.launchers.base import Launcher
    from ..blobstore import BlobShelf
    from ..metrics import QueueMetrics
    from ..webhooks import CallbackGuard


class ServiceParts:
    """The state every part of the service uses (set up by ``TaskService.__init__``)."""

    state: StateDir
    store: TaskStore
    image_dir: Path
    objects: ObjectStore
    queues: Mapping[str, Any]  # pool -> its Huey queue (queue.QueueMap)
    gpus: list[int]
    gpu_slots: int
    cpu_workers: int
    defaults: dict[str, float]  # max_retries, retry_delay, retry_backoff, result_ttl
    on_change: Callable[[str], None]
    on_changes: Callable[[list[str]], None]
    base_url: str
    blobs: BlobShelf
    queue_metrics: QueueMetrics
    _disk_usage: int | None
    _blob_usage: int
    _bells: Mapping[str, Any]  # pool -> its work doorbell (backend.BellMap)
    _blank_row: dict[str, Any]
    _task_stats: tuple[float, dict | None]

    # Set by the extension after start (server/app.py); None in a service built without them (tests).
    launcher: Launcher | None = None  # what starts workers: GET stats shows it, waiting tasks say what they wait for
    callback_guard: CallbackGuard | None = None  # where callback_url may point (server/webhooks.py)

    if TYPE_CHECKING:  # the methods one part calls of another (defined in views.py and files.py)
        def get_task(self, task_id: str) -> dict: ...
        def to_json(self, task: dict, stats: dict | None = None) -> dict: ...
        def alive_workers(self) -> list[dict]: ...
        def task_stats(self) -> dict: ...
        def disk_usage(self) -> int: ...
