"""What a task sees of the kernel that submitted it (issue 19): its random seeds (one rule,
jupyter_taskq/seeds.py), its log level, format and warning filters; and what notebook habits do in a task:
a returned figure shows as a PNG, plt.show() keeps the plot as an output, a tqdm bar drives progress.
The test process plays the kernel: it seeds, logs and filters, then submits."""

from __future__ import annotations

import logging
import random
import warnings

import pytest

from conftest import TaskqServer, wait_for
from jupyter_taskq import seeds

np = pytest.importorskip("numpy")


def draw(i):
    import random

    import numpy as np

    return i, random.random(), float(np.random.rand())


def log_and_warn():
    import logging
    import warnings

    logging.getLogger("analysis").info("fitted the model")
    logging.getLogger("analysis").debug("not shown: the kernel's level is INFO")
    try:
        warnings.warn("taskq-test-warning", UserWarning)
    except UserWarning:
        return "raised"
    return "not raised"


def figure():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([1, 2, 3], [1, 4, 9])
    return fig


def shows_a_plot():
    import matplotlib.pyplot as plt

    plt.plot([1, 2, 3], [3, 1, 2])
    plt.show()
    return "shown"


def counts_with_tqdm(n):
    from tqdm import tqdm

    total = 0
    for i in tqdm(range(n), desc="counting", mininterval=0):
        total += i
    return total


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = TaskqServer(tmp_path_factory.mktemp("kernel"), gpus=[], cpu_workers=2).start()
    yield server
    server.close()


def sweep(client, seed):
    random.seed(seed)
    np.random.seed(seed)
    handles = [client.submit(draw, (i,)) for i in range(3)]
    return [h.result(timeout=60) for h in handles]


def test_a_seeded_sweep_gives_the_same_results_twice_and_each_task_its_own_stream(server):
    client = server.client()
    first, again = sweep(client, 0), sweep(client, 0)
    assert first == again
    assert len({r[1] for r in first}) == 3 and len({r[2] for r in first}) == 3  # no two tasks share a stream
    assert sweep(client, 1) != first


def test_map_tasks_draw_different_streams_and_an_unseeded_kernel_fresh_ones(server):
    client = server.client()
    random.seed()  # from OS entropy, as a kernel that never seeded
    np.random.seed()
    mapped = [h.result(timeout=60) for h in client.submit_many(draw, [0, 1, 2, 3])]
    assert len({r[2] for r in mapped}) == 4 and len({r[1] for r in mapped}) == 4
    random.seed()
    np.random.seed()
    assert [h.result(timeout=60) for h in client.submit_many(draw, [0, 1, 2, 3])] != mapped


def test_the_task_records_its_seed_and_can_be_rerun_exactly(server):
    client = server.client()
    np.random.seed(7)
    handle = client.submit(draw, (5,))
    value = handle.result(timeout=60)
    seed = client.get(handle.id)["seed"]
    assert set(seed) == {"random", "numpy", "torch"} and all(0 <= n < 2 ** 32 for n in seed.values())
    seeds.apply(seed)  # in the kernel: the task's own numbers again
    assert draw(5) == value
    retried = client.retry(handle.id)
    assert retried.result(timeout=60) == value and client.get(retried.id)["seed"] == seed


def test_a_seed_in_a_payload_is_checked(server):
    from jupyter_taskq.payload import calling_context, dumps_call

    client = server.client()
    data = dumps_call(draw, (1,), context={**calling_context(), "seed": {"numpy": 2 ** 40}})
    answer = client.session.post(f"{server.url}taskq/api/tasks", data=data,
                                 headers={"Content-Type": "application/octet-stream"})
    assert answer.status_code == 400 and "seed" in answer.json()["message"]


def test_the_kernels_log_level_format_and_warning_filters_apply_in_the_task(server):
    client = server.client()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("KERNEL-FORMAT %(levelname)s %(name)s: %(message)s"))
    try:
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="taskq-test-warning", category=UserWarning)
            handle = client.submit(log_and_warn)
        assert handle.result(timeout=60) == "raised"
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    log = client.logs(handle.id)["data"]
    assert "KERNEL-FORMAT INFO analysis: fitted the model" in log and "not shown" not in log
    assert client.submit(log_and_warn).result(timeout=60) == "not raised"  # the kernel's filters as they are now


def test_a_returned_figure_shows_as_png(server):
    pytest.importorskip("matplotlib")
    client = server.client()
    handle = client.submit(figure)
    handle.wait(timeout=60)
    shown = client.session.get(f"{server.url}taskq/api/tasks/{handle.id}/display").json()
    assert shown["data"]["image/png"].startswith("iVBORw0KGgo")  # base64 of the PNG signature
    assert "Figure" in shown["data"]["text/plain"]


def test_plt_show_in_a_task_saves_the_plot_as_a_png_output(server, tmp_path):
    pytest.importorskip("matplotlib")
    client = server.client()
    handle = client.submit(shows_a_plot)
    assert handle.result(timeout=60) == "shown"
    outputs = wait_for(lambda: client.get(handle.id)["outputs"], 10, message="the figure as an output")
    assert [o["name"] for o in outputs] == ["figure-1.png"]
    path = handle.download("figure-1.png", str(tmp_path))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_tqdm_bar_drives_the_tasks_progress(server):
    pytest.importorskip("tqdm")
    client = server.client()
    handle = client.submit(counts_with_tqdm, (200,))
    assert handle.result(timeout=60) == sum(range(200))
    progress = wait_for(lambda: (client.get(handle.id)["progress"] or {}).get("done") == 200
                        and client.get(handle.id)["progress"], 10, message="tqdm's last count as progress")
    assert progress["total"] == 200 and progress["message"] == "counting"
