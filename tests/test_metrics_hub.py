"""The hub service's metrics: per-user GPU-seconds, queue wait and tasks, for admins only; attempts read
incrementally from the store (``attempt_events``), each counted once however often it is scraped. A real
TaskService over real stores (SQLite, a real Redis), its tasks moved as a worker moves them."""

from __future__ import annotations

import time

import pytest

from conftest import SERVICE_BACKENDS, as_user, service_over
from prometheus_client.parser import text_string_to_metric_families

from jupyter_taskq.server import metrics as metrics_module
from jupyter_taskq.server.service import ServiceError
from jupyter_taskq.status import TaskStatus as S
from test_store_contract import new_task


@pytest.fixture(params=SERVICE_BACKENDS)
def service(request, tmp_path):
    yield from service_over(request, tmp_path, gpus=(0,))


def run_attempt(store, task_id: str, worker: str, outcome=S.COMPLETE, error=None) -> None:
    """What a worker does: claim (the attempt starts), then end it."""
    assert store.claim(task_id, worker, f"{worker}-instance") is not None
    time.sleep(0.05)  # a measurable run
    assert store.transition(task_id, outcome, [S.RUNNING], error=error)


def parse(text: bytes) -> dict:
    samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return sum(v for (n, got), v in samples.items() if n == name and all(dict(got).get(k) == w for k, w in labels.items()))


def test_hub_metrics_are_per_user_and_for_admins_only(service, monkeypatch):
    monkeypatch.setattr(metrics_module, "MIN_INTERVAL", 0.0)  # every scrape refreshes (the guard has its own test)
    store = service.store
    store.register_worker({"name": "gpu0", "instance": "gpu0-instance", "pool": "gpu", "device": "0",
                           "model": "NVIDIA H100", "host": "h", "pid": 1, "started_at": time.time(),
                           "heartbeat_at": time.time()})
    ada = [new_task(pool="gpu", gpu=1, owner="ada") for _ in range(2)]
    bob = [new_task(pool="cpu", gpu=0, owner="bob"), new_task(pool="gpu", gpu=1, owner="bob")]
    store.create_many(ada + bob)
    for task in ada:
        run_attempt(store, task["id"], "gpu0")
    run_attempt(store, bob[0]["id"], "cpu0", S.FAILED, {"type": "ValueError", "message": "x", "traceback": None})

    with pytest.raises(ServiceError) as refused:
        as_user(service, "bob").metrics()
    assert refused.value.status == 403 and "admin" in str(refused.value)

    admin = as_user(service, "root", admin=True)
    samples = parse(admin.metrics())
    assert value(samples, "taskq_user_gpu_seconds_total", user="ada") >= 0.1
    assert value(samples, "taskq_user_gpu_seconds_total", user="bob") == 0  # a CPU attempt is no GPU time
    assert value(samples, "taskq_user_wait_seconds_count", user="ada") == 2
    assert value(samples, "taskq_user_wait_seconds_count", user="bob") == 1
    assert value(samples, "taskq_user_tasks", user="ada", status="COMPLETE") == 2
    assert value(samples, "taskq_user_tasks", user="bob", status="PENDING") == 1
    assert value(samples, "taskq_task_run_seconds_count", pool="gpu", gpu_model="NVIDIA H100") == 2
    assert value(samples, "taskq_failures_total", pool="cpu", reason="error") == 1
    assert value(samples, "taskq_tasks", status="COMPLETE") == 2

    # Scraped again: nothing counted twice; a new attempt counted once.
    run_attempt(store, bob[1]["id"], "gpu0")
    for _ in range(3):
        samples = parse(admin.metrics())
    assert value(samples, "taskq_attempts_total") == 4
    assert value(samples, "taskq_user_wait_seconds_count") == 4
    assert value(samples, "taskq_user_gpu_seconds_total", user="bob") > 0

    # A personal server's (no hub) metrics have no per-user series (a server is one or the other: a fresh one).
    from jupyter_taskq.hub.tenancy import Identity, SingleUserTenancy

    service.queue_metrics = metrics_module.QueueMetrics(service)
    run_attempt(store, store.create(new_task(pool="gpu", gpu=1, owner="me", id="t-personal")) or "t-personal", "gpu0")
    personal = parse(SingleUserTenancy().scope(service, Identity("me", sees_all=True)).metrics())
    assert not any(name.startswith("taskq_user_") for name, _ in personal)
    assert value(personal, "taskq_attempts_total") == 1


def test_the_scrape_cost_guard(service, monkeypatch):
    """Scrapes within MIN_INTERVAL share one refresh; a refresh reads at most EVENTS_PER_REFRESH attempts of a
    kind and says so (taskq_metrics_backlog), the rest read by the next scrapes, each counted once."""
    store = service.store
    tasks = [new_task(owner="ada") for _ in range(5)]
    store.create_many(tasks)
    for task in tasks:
        run_attempt(store, task["id"], "cpu0")
    monkeypatch.setattr(metrics_module, "EVENTS_PER_REFRESH", 2)
    monkeypatch.setattr(metrics_module, "MIN_INTERVAL", 3600.0)
    admin = as_user(service, "root", admin=True)
    first = admin.metrics()
    assert admin.metrics() is first  # within the interval: the same answer, no store read
    samples = parse(first)
    assert value(samples, "taskq_attempts_total") == 2
    assert value(samples, "taskq_metrics_backlog", kind="ended") == 1
    monkeypatch.setattr(metrics_module, "MIN_INTERVAL", 0.0)
    for _ in range(6):
        samples = parse(admin.metrics())
    assert value(samples, "taskq_attempts_total") == 5
    assert value(samples, "taskq_task_wait_seconds_count") == 5
    assert value(samples, "taskq_metrics_backlog", kind="ended") == 0


def test_label_values_are_bounded():
    bounded = metrics_module._Bounded(2)
    assert [bounded(v) for v in ("a", "b", "c", "a", "d")] == ["a", "b", "other", "a", "other"]


def test_the_grafana_dashboard_asks_only_for_exported_series(service):
    """docs/grafana-dashboard.json names only series the endpoint exports (with their _bucket/_sum/_total)."""
    import json
    import re
    from pathlib import Path

    store = service.store
    store.register_worker({"name": "gpu0", "instance": "gpu0-instance", "pool": "gpu", "device": "0", "model": "A100",
                           "host": "h", "pid": 1, "started_at": time.time(), "heartbeat_at": time.time()})
    task = new_task(pool="gpu", gpu=1, owner="ada")
    store.create(task)
    run_attempt(store, task["id"], "gpu0", S.RETRY, {"type": "ValueError", "message": "x", "traceback": None})
    exported = set(parse(as_user(service, "root", admin=True).metrics()))
    names = {name for name, _labels in exported} | {"taskq_failures_total"}  # declared; no failure happened here
    dashboard = json.loads((Path(__file__).parent.parent / "docs" / "grafana-dashboard.json").read_text())
    asked = {name for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"taskq_[a-z_]+", target["expr"])}
    assert asked and asked <= names, asked - names
