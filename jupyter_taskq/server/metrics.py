"""``GET taskq/api/metrics``: the queue in the Prometheus text format, built with ``prometheus_client``.

Two kinds of series, so a scrape never walks every task:

* **Gauges** (tasks by status, queue depth, live workers, state-dir and blob bytes) are read at scrape
  time from the aggregate queries ``GET stats`` uses (counts over indexes; the disk walk is cached per
  clean-up interval), so ``taskq_tasks`` matches ``GET stats``'s ``counts``.
* **Counters and histograms** (queue wait, run time, attempts by outcome, retries, failures, busy time,
  per-user GPU-seconds and wait) grow incrementally: each refresh reads only the attempts that started or
  ended since the last one (``TaskStore.attempt_events``, an indexed range read). They count from the
  server's start, as a Prometheus counter counts from its process's start (``rate()`` takes the reset
  at a restart in its stride); nothing is replayed from before.

**Scrape-cost guard.** One refresh at a time; a scrape within :data:`MIN_INTERVAL` of the last refresh
gets that refresh's answer; a refresh reads at most :data:`EVENTS_PER_REFRESH` events of each kind and
leaves the rest for the next scrape (``taskq_metrics_backlog`` is 1 meanwhile).

**Bounded labels.** No task, attempt or worker-process label (Ray dropped its per-worker label for
this). ``pool`` is ``cpu`` or ``gpu``; ``gpu_model`` is one of at most :data:`MAX_MODELS` model names
(then ``other``); ``outcome`` is one of :data:`attempts.exit_reason`'s eight words; ``status`` is one of
the eight statuses; ``user`` (hub service only) one of at most :data:`MAX_USERS` names (then ``other``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ..attempts import EVENT_KINDS
from ..pools import GPU_POOL, pool_model
from ..status import TaskStatus

#: The text format every Prometheus reads (2.x and 3.x; prometheus_client's "latest" says 1.0.0 since 0.22).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MIN_INTERVAL = 1.0  # seconds a refresh's answer is reused by the scrapes that follow it
EVENTS_PER_REFRESH = 20_000  # attempts of each kind (started, ended) read by one refresh at most
LOOKBACK = 30.0  # seconds each read looks back, for an attempt recorded late (another machine's clock, a slow commit)
MAX_MODELS = 16
MAX_USERS = 1000
OTHER = "other"
OUTCOMES = ("complete", "error", "timeout", "worker lost", "memory", "cancelled", "interrupted", "crashed")
FAILED_STATUSES = {TaskStatus.FAILED.value, TaskStatus.TIMEOUT.value}
# Seconds: from a blink to a day (queue waits and runs both span that on a shared GPU box).
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


class _Bounded:
    """At most ``limit`` distinct label values; later newcomers are counted under ``other``."""

    def __init__(self, limit: int):
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(value)
        return value


def _pool_labels(pool: str | None, device: str | None, models: _Bounded) -> tuple[str, str]:
    """(``pool``, ``gpu_model``): ``cpu`` and ``""``, or ``gpu`` and the model (of the pool the task asked
    for, else of the device it ran on: ``"GPU 0 · NVIDIA H100"``)."""
    if not pool or not pool.startswith(GPU_POOL):
        return "cpu", ""
    model = pool_model(pool) or (device.partition(" · ")[2] if device else "")
    return GPU_POOL, models(model) if model else ""


class QueueMetrics:
    """The metrics of one server's queue. ``service``: its :class:`TaskService` (the store, the workers'
    records, the disk usage); ``clock``: seconds since the epoch (the workers' clock)."""

    def __init__(self, service, clock: Callable[[], float] = time.time):
        self.service = service
        self.clock = clock
        self._lock = threading.Lock()
        self._answer: tuple[float, bool, bytes] | None = None  # (monotonic time, per_user, text)
        started = clock()
        self._since = {kind: started for kind in EVENT_KINDS}  # the next read's start
        self._seen: dict[str, dict[tuple[str, int], float]] = {kind: {} for kind in EVENT_KINDS}
        self._backlog = {kind: False for kind in EVENT_KINDS}
        self._refresh_seconds = 0.0
        self._per_user = False
        self.models = _Bounded(MAX_MODELS)
        self.users = _Bounded(MAX_USERS)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        pool = ["pool", "gpu_model"]
        self.wait = Histogram("taskq_task_wait_seconds", "Seconds from submission (a held task: from when its "
                              "dependencies and start time let it start) to the start of its first attempt", pool,
                              buckets=BUCKETS, registry=r)
        self.run = Histogram("taskq_task_run_seconds", "Seconds each attempt ran, by pool and GPU model", pool,
                             buckets=BUCKETS, registry=r)
        self.attempts = Counter("taskq_attempts", "Attempts that ended, by how they ended (complete, error, "
                                "timeout, worker lost, memory, cancelled, interrupted, crashed)",
                                [*pool, "outcome"], registry=r)
        self.retries = Counter("taskq_retries", "Attempts that failed and left their task waiting for another "
                               "(RETRY)", pool, registry=r)
        self.failures = Counter("taskq_failures", "Tasks that ended FAILED or TIMEOUT, by the reason of their last "
                                "attempt", [*pool, "reason"], registry=r)
        self.busy = Counter("taskq_worker_busy_seconds", "Seconds workers spent running attempts (pool gpu: GPU "
                            "busy time), counted when each attempt ends", pool, registry=r)
        self.user_gpu = Counter("taskq_user_gpu_seconds", "GPU-seconds of each hub user's attempts, counted when "
                                "each ends (hub service only)", ["user"], registry=r)
        self.user_wait = Summary("taskq_user_wait_seconds", "Seconds each hub user's tasks waited for their first "
                                 "attempt (hub service only)", ["user"], registry=r)
        r.register(_Gauges(self))

    # -- the scrape ----------------------------------------------------------------------------------
    def text(self, per_user: bool = False) -> bytes:
        """The exposition text; refreshed at most once per :data:`MIN_INTERVAL`, one refresh at a time."""
        with self._lock:
            now = time.monotonic()
            if self._answer is not None and now - self._answer[0] < MIN_INTERVAL and self._answer[1] == per_user:
                return self._answer[2]
            self._per_user = per_user
            began = time.perf_counter()
            self._gauges = self._read_gauges(per_user)
            for kind in EVENT_KINDS:
                self._read_events(kind, per_user)
            self._refresh_seconds = time.perf_counter() - began
            answer = generate_latest(self.registry)
            self._answer = (time.monotonic(), per_user, answer)
            return answer

    def _read_gauges(self, per_user: bool) -> dict:
        store = self.service.store
        return {"counts": store.counts_by_status(), "waiting": store.waiting_by_pool(),
                "workers": self.service.alive_workers(), "running": {t["worker_instance"] for t in store.running()},
                "disk": self.service.disk_usage(), "blobs": self.service.blob_usage(),
                "by_owner": store.counts_by_owner() if per_user else {}}

    def _read_events(self, kind: str, per_user: bool) -> None:
        """Observe the attempts that ``kind`` since the last read, each once. A read that catches up goes back
        :data:`LOOKBACK` seconds next time (an attempt recorded late); ``_seen`` holds what lies in the next
        read's window, so it is skipped, and the read's limit makes room for it: at most
        :data:`EVENTS_PER_REFRESH` new attempts per read, and a full read goes on from its last one."""
        column = "started_at" if kind == "started" else "ended_at"
        seen = self._seen[kind]
        limit = EVENTS_PER_REFRESH + len(seen)
        events = self.service.store.attempt_events(kind, self._since[kind], limit)
        for event in events:
            key = (event["task_id"], event["attempt"])
            if key in seen or event[column] is None:
                continue
            seen[key] = event[column]
            self._observe(kind, event, per_user)
        full = len(events) >= limit
        self._backlog[kind] = full
        if events:
            newest = events[-1][column]
            self._since[kind] = newest if full else max(self._since[kind], newest - LOOKBACK)
        for key in [k for k, at in seen.items() if at < self._since[kind]]:
            del seen[key]

    def _observe(self, kind: str, event: dict, per_user: bool) -> None:
        pool, model = _pool_labels(event["pool"], event["device"], self.models)
        user = self.users(event["owner"] or "") if per_user else None
        if kind == "started":
            since = event.get("ready_at") or event["created_at"]  # a held task: from its release (pipelines.py)
            if event["attempt"] == 1 and since is not None:
                wait = max(0.0, event["started_at"] - since)
                self.wait.labels(pool, model).observe(wait)
                if user is not None:
                    self.user_wait.labels(user).observe(wait)
            return
        ran = max(0.0, event["ended_at"] - (event["started_at"] or event["ended_at"]))
        outcome = event["reason"] if event["reason"] in OUTCOMES else "error"
        self.run.labels(pool, model).observe(ran)
        self.busy.labels(pool, model).inc(ran)
        self.attempts.labels(pool, model, outcome).inc()
        if event["status"] == TaskStatus.RETRY.value:
            self.retries.labels(pool, model).inc()
        elif event["status"] in FAILED_STATUSES:
            self.failures.labels(pool, model, outcome).inc()
        if user is not None and event["gpu"]:
            self.user_gpu.labels(user).inc(ran)


class _Gauges:
    """The series read at scrape time (a custom collector: no stale label sets between scrapes)."""

    def __init__(self, metrics: QueueMetrics):
        self.metrics = metrics

    def describe(self):
        return []  # not described ahead: it reads the store only during a refresh

    def collect(self):
        m = self.metrics
        g = getattr(m, "_gauges", None)
        if g is None:
            return
        tasks = GaugeMetricFamily("taskq_tasks", "Tasks by status (as GET stats counts them)", labels=["status"])
        for status in TaskStatus:
            if status is not TaskStatus.LOST:
                tasks.add_metric([status.value], g["counts"].get(status.value, 0))
        yield tasks
        depth = GaugeMetricFamily("taskq_queue_depth", "Tasks waiting (PENDING or RETRY) per pool",
                                  labels=["pool", "gpu_model"])
        summed: dict[tuple[str, str], int] = {("cpu", ""): 0, ("gpu", ""): 0}
        for pool, n in g["waiting"].items():
            key = _pool_labels(pool, None, m.models)
            summed[key] = summed.get(key, 0) + n
        for (pool, model), n in sorted(summed.items()):
            depth.add_metric([pool, model], n)
        yield depth
        workers = GaugeMetricFamily("taskq_workers", "Live workers (a heartbeat in the last 10 s), busy or idle",
                                    labels=["pool", "gpu_model", "state"])
        by: dict[tuple[str, str, str], int] = {}
        for w in g["workers"]:
            pool, model = ("cpu", "") if w["pool"] != GPU_POOL else ("gpu", m.models(w.get("model") or ""))
            state = "busy" if w["instance"] in g["running"] else "idle"
            by[(pool, model, state)] = by.get((pool, model, state), 0) + 1
        for labels, n in sorted(by.items()):
            workers.add_metric(list(labels), n)
        yield workers
        yield GaugeMetricFamily("taskq_state_dir_bytes", "Bytes of the state directory and task files (measured at "
                                "most once per clean-up interval)", value=g["disk"])
        yield GaugeMetricFamily("taskq_blob_bytes", "Bytes of shared payload parts (blobs)", value=g["blobs"])
        if m._per_user:
            users = GaugeMetricFamily("taskq_user_tasks", "Each hub user's tasks by status (hub service only)",
                                      labels=["user", "status"])
            summed_users: dict[tuple[str, str], int] = {}
            for owner, counts in sorted(g["by_owner"].items(), key=lambda kv: kv[0] or ""):
                user = m.users(owner or "")
                for status, n in counts.items():
                    summed_users[(user, status)] = summed_users.get((user, status), 0) + n
            for labels, n in sorted(summed_users.items()):
                users.add_metric(list(labels), n)
            yield users
        backlog = GaugeMetricFamily("taskq_metrics_backlog", "1 while attempts of this kind remain unread (the "
                                    "scrape-cost guard read its limit); they are read by the next scrapes",
                                    labels=["kind"])
        for kind, full in m._backlog.items():
            backlog.add_metric([kind], 1 if full else 0)
        yield backlog
        yield GaugeMetricFamily("taskq_metrics_refresh_seconds", "Seconds the last refresh of these metrics took",
                                value=m._refresh_seconds)
