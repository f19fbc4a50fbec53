"""The one domain API behind every REST handler: submit, look up, cancel, retry, delete.

Handlers stay thin: they parse HTTP and call this. :class:`TaskService` is a small facade whose methods come
from one part per job, each in its own module:

* ``submit.py`` (:class:`Submission`): validating options, spooling payloads, submitting, retrying;
* ``views.py`` (:class:`TaskViews`): a task's JSON, listings, stats, metrics, the change feed's helpers;
* ``files.py`` (:class:`TaskFiles`): blobs, results, exceptions, outputs, logs, disk usage;
* ``housekeeping.py`` (:class:`Housekeeping`): reconciling at start, cancel, delete, the TTL sweeps;
* ``errors.py``: :class:`ServiceError` (an HTTP status and a message saying what was wrong) and its makers.

The parts share the state set up here (the store, queues, state directory, object store), so callers keep
``service.submit(...)``, ``service.get(...)`` and so on, whichever part holds the method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ... import imagecache
from ...backends.base import BellMap
from ...backends.doorbell import work_bell
from ...objectstore import ObjectStore
from ...statedir import StateDir
from ...backends.taskstore import TASK_COLUMNS, TaskStore
from ..blobstore import BlobShelf
from ..metrics import QueueMetrics
from ...serviceerrors import ServiceError, bad_request, conflict, lost, not_found
from .files import TaskFiles
from .housekeeping import Housekeeping
from .submit import Submission
from .views import OPTION_NAMES, TaskViews, iso

__all__ = ["OPTION_NAMES", "ServiceError", "TaskService", "bad_request", "conflict", "iso", "lost", "not_found"]


class TaskService(Submission, TaskViews, TaskFiles, Housekeeping):
    """The task queue's domain API: one object per server, shared by every handler (through the tenancy's view)."""

    def __init__(self, state: StateDir, store: TaskStore, queues: Mapping[str, Any], *, gpus: list[int],
                 workers_per_gpu: int, cpu_workers: int, max_retries: int, retry_delay: float, retry_backoff: float,
                 result_ttl: float,
                 base_url: str = "/", on_change: Callable[[str], None] = lambda task_id: None,
                 on_changes: Callable[[list[str]], None] | None = None,
                 work_bells: Mapping[str, Any] | None = None, objects: ObjectStore | None = None):
        self.state = state
        self.store = store
        self.image_dir = imagecache.image_dir(state.root)  # the app sets c.TaskQueue.image_dir's
        self.objects = objects or ObjectStore(state.files)
        self.queues = queues
        self.gpus = list(gpus)
        self.gpu_slots = len(self.gpus) * workers_per_gpu
        self.cpu_workers = cpu_workers
        self.defaults = {"max_retries": max_retries, "retry_delay": retry_delay, "retry_backoff": retry_backoff,
                         "result_ttl": result_ttl}
        self.on_change = on_change

        def each_change(task_ids: list[str]) -> None:
            for task_id in task_ids:
                on_change(task_id)

        # Many tasks at once (a batch): one call, so the change feed hops to the event loop once.
        self.on_changes = on_changes or each_change
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._disk_usage: int | None = None
        self._blob_usage = 0
        self._bells = work_bells if work_bells is not None else BellMap(lambda pool: work_bell(state.bells, pool))
        self._blank_row = {column: None for column in TASK_COLUMNS} | {"result_expired": 0}
        self._task_stats: tuple[float, dict | None] = (0.0, None)
        self.blobs = BlobShelf(state, store, self.objects)
        self.queue_metrics = QueueMetrics(self)  # counts from now on (server/metrics.py)
