"""A completed task's result as the notebook would show it (IPython's display formatter, run on the worker):
``GET tasks/<id>/display`` gives a DataFrame's HTML table without a kernel; a scalar its repr; None nothing;
a bundle over the cap keeps its text and names what it left out."""

from __future__ import annotations

import pytest

from jupyter_taskq.notebook.client import TaskHandle
from jupyter_taskq.worker import display


def frame(rows):
    import pandas as pd

    return pd.DataFrame({"n": range(rows), "square": [i * i for i in range(rows)]})


def nothing():
    return None


def answer():
    return 42


def slow():
    import time

    time.sleep(30)


def get_display(server, client, task_id):
    return client.session.get(f"{server.url}taskq/api/tasks/{task_id}/display")


def test_a_dataframe_result_shows_as_a_table(shared_server):
    client = shared_server.client()
    handle = TaskHandle(client.submit(frame, (3,)).id, client=client)
    assert handle.result(timeout=60).shape == (3, 2)
    shown = get_display(shared_server, client, handle.id).json()
    assert "<table" in shown["data"]["text/html"] and "square" in shown["data"]["text/html"]
    assert "square" in shown["data"]["text/plain"] and shown["left_out"] == []


def test_none_shows_nothing_and_a_scalar_its_repr(shared_server):
    client = shared_server.client()
    none = TaskHandle(client.submit(nothing).id, client=client)
    scalar = TaskHandle(client.submit(answer).id, client=client)
    assert none.result(timeout=60) is None and scalar.result(timeout=60) == 42
    assert get_display(shared_server, client, none.id).json()["data"] == {}
    assert get_display(shared_server, client, scalar.id).json()["data"] == {"text/plain": "42"}
    results = shared_server.state_dir / "results"
    assert not (results / f"{scalar.id}.display").exists()  # the worker wrote nothing: the server made it
    assert not (results / f"{none.id}.display").exists()


def test_the_server_never_runs_what_a_small_result_names(shared_server, tmp_path):
    """The server reads a small result to show a scalar, refusing any class or function it names:
    a result that would call a function when loaded shows nothing and calls nothing."""
    import io
    import pickle

    from jupyter_taskq.server.display import _NoGlobals

    canary = tmp_path / "ran"

    class Trap:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    for value in (Trap(), complex(1, 2)):
        with pytest.raises(pickle.UnpicklingError):
            _NoGlobals(io.BytesIO(pickle.dumps(value))).load()
    assert not canary.exists()
    assert _NoGlobals(io.BytesIO(pickle.dumps(("a", 1)))).load() == ("a", 1)


def test_display_of_an_unfinished_or_missing_task_is_a_clear_error(shared_server):
    client = shared_server.client()
    handle = TaskHandle(client.submit(slow, timeout=60).id, client=client)
    try:
        answer = get_display(shared_server, client, handle.id)
        assert answer.status_code == 409 and "COMPLETE" in answer.json()["message"]
    finally:
        client.cancel([handle.id])
    missing = get_display(shared_server, client, "no-such-task")
    assert missing.status_code == 404 and "no-such-task" in missing.json()["message"]


class BigHtml:
    def _repr_html_(self):
        return "<p>" + "x" * (display.MAX_BUNDLE_BYTES + 1) + "</p>"

    def __repr__(self):
        return "BigHtml()"


def test_a_bundle_over_the_cap_keeps_its_text_and_names_what_it_left_out():
    shown = display.bundle(BigHtml())
    assert shown["data"] == {"text/plain": "BigHtml()"} and shown["left_out"] == ["text/html"]
    assert display.bundle(None) is None and display.bundle(42) is None and display.bundle("short") is None
    long_text = display.bundle(list(range(10**6)))["data"]["text/plain"]  # IPython's pretty printer elides it
    assert len(long_text.encode()) <= display.MAX_BUNDLE_BYTES


def test_a_long_bytes_or_text_result_shows_its_start_and_length_without_a_full_repr():
    """IPython reprs all of a bytes value before the cap cuts it: 2 s for 100 MB, on every such attempt."""
    for value, unit in ((bytes(50_000_000), "bytes"), ("ab" * 10_000, "characters"), (bytearray(b"z" * 5000), "bytes")):
        text = display.bundle(value)["data"]["text/plain"]
        assert text.endswith(f"({len(value):,} {unit})") and len(text) < 10_000, text[-80:]
    assert display.bundle(b"\x00" * 5000)["data"]["text/plain"].startswith("b'\\x00\\x00")
