"""on_start: a function run once per task process before its first attempt, whose value the task reads
with ``jupyter_taskq.on_start_value()``; with keep_warm_seconds it runs once for many attempts."""

from __future__ import annotations

import pytest

from conftest import TaskqServer, wait_for


def notebook_function(source: str, cell: str = "<string>"):
    """A function defined as in a notebook (module __main__), so it travels by value; ``cell``: the file name
    of the cell it comes from, its source in linecache as IPython keeps it (so tracebacks show its lines)."""
    import linecache

    namespace = {"__name__": "__main__"}
    if cell != "<string>":
        linecache.cache[cell] = (len(source), None, source.splitlines(keepends=True), cell)
    exec(compile(source, cell, "exec"), namespace)  # noqa: S102 - test-only
    return next(v for k, v in namespace.items() if callable(v) and not k.startswith("__"))


def loader(log_path, tag: str = "model"):
    """An on_start that notes each run (its pid) in a file and returns a 'model'."""
    return notebook_function(
        "def load_model():\n"
        "    import os\n"
        f"    with open({str(log_path)!r}, 'a') as f:\n"
        "        f.write(f'{os.getpid()}\\n')\n"
        f"    return {{'model': {tag!r}, 'loaded_in': os.getpid()}}\n")


use_model = notebook_function(
    "def use_model(x=0):\n"
    "    import os\n"
    "    from jupyter_taskq import on_start_value\n"
    "    return os.getpid(), on_start_value()\n")

broken_loader = notebook_function(
    "def load_model():\n"
    "    raise ValueError('no weights file')\n", cell="/tmp/ipykernel_1/on_start_cell.py")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = TaskqServer(tmp_path_factory.mktemp("on_start"), gpus=[], cpu_workers=1).start()
    yield server
    server.close()


def runs(log_path) -> list[str]:
    return log_path.read_text().split() if log_path.exists() else []


def test_on_start_runs_once_per_warm_process_and_its_value_is_readable(server, tmp_path):
    client = server.client()
    log = tmp_path / "on_start.log"
    load_model = loader(log)
    results = [client.submit(use_model, (i,), keep_warm_seconds=60, on_start=load_model).result(timeout=60)
               for i in range(3)]
    pids = {pid for pid, _ in results}
    assert len(pids) == 1  # one warm process served all three
    pid = pids.pop()
    assert all(value == {"model": "model", "loaded_in": pid} for _, value in results)
    assert runs(log) == [str(pid)]  # on_start ran once, in that process


def test_without_keep_warm_on_start_runs_before_each_attempt(server, tmp_path):
    client = server.client()
    log = tmp_path / "on_start.log"
    load_model = loader(log)
    results = [client.submit(use_model, on_start=load_model).result(timeout=60) for _ in range(2)]
    assert results[0][0] != results[1][0]
    assert runs(log) == [str(pid) for pid, _ in results]
    assert all(value["loaded_in"] == pid for pid, value in results)


def test_a_changed_on_start_gets_a_fresh_process(server, tmp_path):
    client = server.client()
    log = tmp_path / "on_start.log"
    first = client.submit(use_model, keep_warm_seconds=60, on_start=loader(log, "v1")).result(timeout=60)
    again = client.submit(use_model, keep_warm_seconds=60, on_start=loader(log, "v1")).result(timeout=60)
    assert again == first  # the same on_start (rebuilt alike): the warm process serves it
    changed = client.submit(use_model, keep_warm_seconds=60, on_start=loader(log, "v2")).result(timeout=60)
    assert changed[0] != first[0] and changed[1] == {"model": "v2", "loaded_in": changed[0]}
    assert runs(log) == [str(first[0]), str(changed[0])]


def test_a_failing_on_start_fails_the_attempt_labelled_and_is_retried(server):
    client = server.client()
    handle = client.submit(use_model, keep_warm_seconds=60, on_start=broken_loader, max_retries=1)
    with pytest.raises(ValueError, match="no weights file") as raised:
        handle.result(timeout=60)
    assert any("on_start load_model" in note for note in getattr(raised.value, "__notes__", []))
    task = client.get(handle.id)
    assert task["status"] == "FAILED"
    error = task["error"]
    assert error["type"] == "ValueError" and error["message"] == "in on_start load_model: no weights file"
    assert error["traceback"].startswith("on_start load_model failed")
    assert "raise ValueError('no weights file')" in error["traceback"]  # its own line, from the cell source
    attempts = wait_for(lambda: (a := client.attempts(handle.id)) and len(a) == 2 and a, 10, message="2 attempts")
    assert [a["reason"] for a in attempts] == ["error", "error"]  # retried like any failure
    # The failed process is not kept: a working on_start afterwards runs in a fresh one.
    pid, value = client.submit(use_model, keep_warm_seconds=60, on_start=loader_ok).result(timeout=60)
    assert value == "ok"


loader_ok = notebook_function("def load_model():\n    return 'ok'\n")

crashy = notebook_function(
    "def crashy(mode='ok'):\n"
    "    import os, time\n"
    "    if mode == 'crash':\n"
    "        os._exit(3)\n"
    "    if mode == 'sleep':\n"
    "        time.sleep(60)\n"
    "    return os.getpid()\n")


def test_on_start_runs_again_after_a_crash_or_a_timeout(server, tmp_path):
    client = server.client()
    log = tmp_path / "on_start.log"
    load_model = loader(log)

    def submit(mode="ok", **options):
        return client.submit(crashy, (mode,), keep_warm_seconds=60, on_start=load_model, max_retries=0, **options)

    pid = submit().result(timeout=60)
    assert submit().result(timeout=60) == pid and runs(log) == [str(pid)]
    crashed = submit("crash")
    wait_for(lambda: client.get(crashed.id)["status"] == "FAILED", 30, message="the crash FAILED")
    after_crash = submit().result(timeout=60)
    assert after_crash != pid and runs(log) == [str(pid), str(after_crash)]  # a fresh process: on_start again
    timed_out = submit("sleep", timeout=1)
    wait_for(lambda: client.get(timed_out.id)["status"] == "TIMEOUT", 30, message="TIMEOUT")
    after_timeout = submit().result(timeout=60)
    assert after_timeout not in (pid, after_crash) and runs(log)[-1] == str(after_timeout) and len(runs(log)) == 3


def test_retry_for_applies_to_what_on_start_raised(server):
    client = server.client()
    handle = client.submit(use_model, on_start=broken_loader, max_retries=3, retry_for=[KeyError])
    wait_for(lambda: client.get(handle.id)["status"] == "FAILED", 30, message="FAILED")
    assert len(client.attempts(handle.id)) == 1  # a ValueError is not a KeyError: not retried


def test_an_on_start_that_cannot_travel_is_refused_in_the_kernel(server):
    holds_big = notebook_function("def load_model():\n    return len(DATA)\n")
    holds_big.__globals__["DATA"] = b"x" * (2 * 1024 * 1024)
    client = server.client()
    from jupyter_taskq.payload import PayloadError

    with pytest.raises(PayloadError, match="over 1,048,576"):
        client.submit(use_model, on_start=holds_big)
    with pytest.raises(ValueError, match="on_start' must be a function"):
        client.submit(use_model, on_start="load_model")


def test_the_decorator_and_the_magic_take_on_start(server):
    """As a notebook writes it: ``@task_queue(keep_warm_seconds=..., on_start=f)`` and
    ``%%task_queue --on-start f`` (naming a function of the notebook), in IPython's own shell."""
    import textwrap

    from IPython.core.interactiveshell import InteractiveShell

    from conftest import TOKEN
    from jupyter_taskq.notebook import client as client_module

    saved = client_module._default_client
    ip = InteractiveShell.instance()

    def run(code: str):
        result = ip.run_cell(textwrap.dedent(code).strip("\n"), store_history=False)
        result.raise_error()
        return result.result

    try:
        run("%load_ext jupyter_taskq")
        run(f"import jupyter_taskq; jupyter_taskq.connect({server.url!r}, {TOKEN!r})")
        run("""
            import os
            from jupyter_taskq import task_queue, on_start_value
            def load_model():
                return {'model': 'from a cell', 'pid': os.getpid()}
            @task_queue(keep_warm_seconds=60, on_start=load_model)
            def predict(x):
                return x, on_start_value(), os.getpid()
        """)
        first = run("predict.put(1).result(timeout=60)")
        second = run("predict.put(2).result(timeout=60)")
        assert first[1] == {"model": "from a cell", "pid": first[2]} and second[1:] == first[1:]
        handle = run("""
            %%task_queue --on-start load_model --name on_start_cell
            value = on_start_value()
        """)
        assert handle.pull(timeout=60)["value"]["model"] == "from a cell"
        with pytest.raises(ValueError, match="no function named 'nope'"):
            run("%%task_queue --on-start nope\nx = 1")
    finally:
        client_module._default_client = saved


predict = notebook_function(
    "def predict(x=0):\n"
    "    import os\n"
    "    return os.getpid()\n")
fits_a_model = notebook_function(
    "def load_model():\n"
    "    import sklearn.ensemble\n"
    "    model = sklearn.ensemble.RandomForestClassifier(n_estimators=2, random_state=0)\n"
    "    return model.fit([[0.0], [1.0], [2.0], [3.0]], [0, 1, 0, 1]).predict([[1.0]])\n")


def test_a_library_loaded_by_on_start_does_not_make_the_warm_function_look_edited(server):
    """Once scikit-learn (whose estimators have a method ``predict``) has run in the process, the notebook's
    ``predict`` unpickled for the next attempt pickles to other bytes (that name is now interned): it is
    still the same code, and the warm process serves it."""
    client = server.client()
    pids = [client.submit(predict, (i,), keep_warm_seconds=60, on_start=fits_a_model).result(timeout=60)
            for i in range(3)]
    assert len(set(pids)) == 1


def test_the_warm_fingerprint_is_blind_to_string_identity_only():
    """A pickle differs when two equal names are one object or two (interning decides, and it changes as a
    process imports libraries); the digest a warm process compares does not, and still tells values apart."""
    import pickle

    from jupyter_taskq.pickling import identity_free_digest

    name = "predict"
    one_object = pickle.dumps((name, name, [1.5, name]), protocol=5)
    equal_objects = pickle.dumps((name, "".join(["pre", "dict"]), [1.5, "".join(["pre", "dict"])]), protocol=5)
    assert one_object != equal_objects
    assert identity_free_digest(one_object) == identity_free_digest(equal_objects)
    assert identity_free_digest(pickle.dumps((name, "fit", [1.5, name]), protocol=5)) != identity_free_digest(one_object)
    shared_list = [1]
    assert identity_free_digest(pickle.dumps((shared_list, shared_list))) != identity_free_digest(
        pickle.dumps(([1], [1])))  # a shared mutable object is not the same value as two equal ones


def test_map_and_a_function_sent_as_a_shared_part_carry_on_start(server, tmp_path):
    """submit_many (what .map() sends) puts on_start in every payload, also when the function is big enough
    to travel once as a shared part (blobs.py) and each payload only names it."""
    client = server.client()
    log = tmp_path / "on_start.log"
    big = notebook_function(
        "def big(x):\n"
        "    import os\n"
        "    from jupyter_taskq import on_start_value\n"
        "    return os.getpid(), on_start_value()['model'], len(TABLE)\n")
    big.__globals__["TABLE"] = b"t" * (2 * 1024 * 1024)
    handles = client.submit_many(big, [1, 2, 3], keep_warm_seconds=60, on_start=loader(log, "mapped"))
    results = [h.result(timeout=60) for h in handles]
    assert {r[1:] for r in results} == {("mapped", 2 * 1024 * 1024)}
    assert len({r[0] for r in results}) == 1 and runs(log) == [str(results[0][0])]
