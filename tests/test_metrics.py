"""GET taskq/api/metrics: Prometheus text that prometheus_client's own parser reads, counts that agree with
GET stats while 1,000 tasks run, bounded labels, and the hub's per-user series (admins only)."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import TOKEN, wait_for

BACKENDS = ["sqlite", "redis"]
TASKS = 1000


def quick(x):
    return x


def boom():
    raise ValueError("no")


def scrape(server, token: str = TOKEN) -> dict:
    """``{family name: {sample name with labels: value}}`` as prometheus_client's parser reads the answer."""
    response = requests.get(server.url + "taskq/api/metrics", headers={"Authorization": f"Bearer {token}"},
                            timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {}
    for family in text_string_to_metric_families(response.text):
        assert family.name.startswith("taskq_"), family.name
        families[family.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
    return families


def total(family: dict, sample: str, **labels) -> float:
    return sum(v for (name, got), v in family.items()
               if name == sample and all(dict(got).get(k) == want for k, want in labels.items()))


def tasks_by_status(families: dict) -> dict[str, int]:
    return {dict(labels)["status"]: int(v) for (_name, labels), v in families["taskq_tasks"].items()}


def test_metrics_agree_with_stats_while_1000_tasks_run(make_server):
    server = make_server(gpus=[], cpu_workers=2)
    client = server.client()
    handles = client.submit_many(quick, list(range(TASKS)))
    scrapes = 0
    previous_done = 0.0
    while True:  # scraped again and again while they run: every answer parses and adds up
        families = scrape(server)
        scrapes += 1
        counts = tasks_by_status(families)
        assert sum(counts.values()) == TASKS, counts
        assert set(counts) == {"PENDING", "RUNNING", "COMPLETE", "RETRY", "FAILED", "TIMEOUT", "EXPIRED",
                               "CANCELLED"}
        done = total(families["taskq_attempts"], "taskq_attempts_total", outcome="complete")
        assert done >= previous_done  # a counter never goes back
        previous_done = done
        assert total(families["taskq_task_run_seconds"], "taskq_task_run_seconds_count") == done
        assert total(families["taskq_task_wait_seconds"], "taskq_task_wait_seconds_count") <= TASKS
        if counts["COMPLETE"] == TASKS:
            break
        assert scrapes < 2000, "the tasks did not finish"
    assert scrapes >= 3  # it was scraped while they ran, not only at the end

    def agree():
        families, stats = scrape(server), client.stats()
        if tasks_by_status(families) != {s: n for s, n in stats["counts"].items() if s != "LOST"}:
            return None
        if total(families["taskq_attempts"], "taskq_attempts_total") != TASKS:
            return None
        return families

    families = wait_for(agree, 30, 0.2, "metrics that agree with GET stats")
    assert total(families["taskq_attempts"], "taskq_attempts_total", outcome="complete", pool="cpu") == TASKS
    assert total(families["taskq_task_run_seconds"], "taskq_task_run_seconds_count", pool="cpu") == TASKS
    assert total(families["taskq_task_wait_seconds"], "taskq_task_wait_seconds_count", pool="cpu") == TASKS
    assert total(families["taskq_task_wait_seconds"], "taskq_task_wait_seconds_bucket", le="+Inf") == TASKS
    assert total(families["taskq_queue_depth"], "taskq_queue_depth") == 0
    assert total(families["taskq_workers"], "taskq_workers", pool="cpu") == 2
    assert total(families["taskq_state_dir_bytes"], "taskq_state_dir_bytes") > 0
    assert "taskq_blob_bytes" in families and "taskq_metrics_backlog" in families
    # Bounded labels: nothing names a task, an attempt or a worker process.
    ids = {h.id for h in handles}
    for family in families.values():
        for (_name, labels), _value in family.items():
            keys = dict(labels)
            assert not {"task", "task_id", "id", "worker", "pid", "instance"} & set(keys), keys
            assert not ids & set(keys.values())
    assert all(h.result(timeout=10) == i for i, h in enumerate(handles[:3]))


def test_failures_and_retries_are_counted_by_reason(make_server):
    server = make_server(gpus=[], cpu_workers=1)
    client = server.client()
    failing = client.submit(boom, max_retries=1)
    assert failing.wait(timeout=60) == "FAILED"

    def counted():
        families = scrape(server)
        return families if total(families["taskq_failures"], "taskq_failures_total") == 1 else None

    families = wait_for(counted, 20, 0.2, "the failure in the metrics")
    assert total(families["taskq_retries"], "taskq_retries_total", pool="cpu") == 1
    assert total(families["taskq_attempts"], "taskq_attempts_total", outcome="error") == 2
    assert total(families["taskq_failures"], "taskq_failures_total", reason="error") == 1
    assert tasks_by_status(families)["FAILED"] == 1


def test_metrics_need_a_token(shared_server):
    answer = requests.get(shared_server.url + "taskq/api/metrics", timeout=10)
    assert answer.status_code == 403
    assert "message" in answer.json()
