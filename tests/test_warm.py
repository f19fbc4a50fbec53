"""keep_warm_seconds: a task process kept alive, with its imports, for the next attempt of the same
function from the same notebook world; never across worlds, after a failure or kill, or with stale code."""

from __future__ import annotations

import pytest
import requests

from conftest import TOKEN, TaskqServer, wait_for


def notebook_function(source: str):
    """A function defined as in a notebook (module __main__), so it travels by value."""
    namespace = {"__name__": "__main__"}
    exec(source, namespace)  # noqa: S102 - test-only
    return next(v for k, v in namespace.items() if callable(v) and not k.startswith("__"))


warm_pid = notebook_function(
    "def warm_pid(_=None):\n"
    "    import os, sys\n"
    "    already = 'colorsys' in sys.modules\n"
    "    import colorsys\n"
    "    return os.getpid(), already\n")
edited_pid = notebook_function(
    "def warm_pid(_=None):\n"
    "    import os\n"
    "    return os.getpid(), 'edited'\n")
flaky = notebook_function(
    "def flaky(mode='ok'):\n"
    "    import os, time\n"
    "    if mode == 'fail':\n"
    "        raise ValueError(os.getpid())\n"
    "    if mode == 'sleep':\n"
    "        time.sleep(60)\n"
    "    return os.getpid()\n")
local_value = notebook_function(
    "def local_value():\n"
    "    import os\n"
    "    import warm_local_module\n"
    "    return os.getpid(), warm_local_module.VALUE\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = TaskqServer(tmp_path_factory.mktemp("warm"), gpus=[], cpu_workers=1).start()
    yield server
    server.close()


def run(client, fn, **options):
    return client.submit(fn, keep_warm_seconds=60, **options).result(timeout=60)


def test_a_warm_process_serves_the_same_function_with_its_imports(server):
    client = server.client()
    first_pid, imported = run(client, warm_pid)
    assert imported is False
    for _ in range(3):
        assert run(client, warm_pid) == (first_pid, True)  # same process, module imported once
    assert client.submit(warm_pid).result(timeout=60)[0] != first_pid  # without keep_warm_seconds: fresh


def test_no_warm_reuse_for_other_code_or_another_world(server, tmp_path, monkeypatch):
    client = server.client()
    pid, _ = run(client, warm_pid)
    assert run(client, warm_pid)[0] == pid
    edited, value = run(client, edited_pid)  # same name, other code
    assert value == "edited" and edited != pid
    monkeypatch.chdir(tmp_path)  # another notebook's world
    assert run(client, warm_pid)[0] not in (pid, edited)


def test_no_warm_reuse_after_a_failure_or_a_kill(server):
    client = server.client()
    pid = run(client, flaky)
    assert run(client, flaky) == pid
    failed = client.submit(flaky, ("fail",), keep_warm_seconds=60, max_retries=0)
    wait_for(lambda: client.get(failed.id)["status"] == "FAILED", 30, message="FAILED")
    after_failure = run(client, flaky)
    assert after_failure != pid and run(client, flaky) == after_failure
    timed_out = client.submit(flaky, ("sleep",), keep_warm_seconds=60, timeout=1, max_retries=0)
    wait_for(lambda: client.get(timed_out.id)["status"] == "TIMEOUT", 30, message="TIMEOUT")
    assert run(client, flaky) not in (pid, after_failure)


def test_an_edited_local_module_replaces_the_warm_process(server, tmp_path, monkeypatch):
    client = server.client()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "warm_local_module.py"
    module.write_text("VALUE = 1\n")
    pid, value = run(client, local_value)
    assert run(client, local_value) == (pid, 1)
    module.write_text("VALUE = 2  # edited\n")
    new_pid, value = run(client, local_value)
    assert value == 2 and new_pid != pid


def test_stats_show_warm_processes_and_a_request_drops_them(server):
    client = server.client()
    pid, _ = run(client, warm_pid)

    def warm():
        return [w for worker in client.stats()["workers"] for w in worker["warm"]]

    shown = wait_for(warm, 10, message="the warm process in stats")
    assert shown[0]["function"] == "warm_pid" and shown[0]["idle_s"] >= 0 and shown[0]["keep_warm_seconds"] == 60
    dropped = requests.delete(server.url + "taskq/api/warm", headers={"Authorization": f"token {TOKEN}"})
    assert dropped.status_code == 200 and dropped.json()["workers_asked"] >= 1
    wait_for(lambda: not warm(), 10, message="no warm process left")
    assert run(client, warm_pid)[0] != pid


def _draws():
    namespace = {"__name__": "__main__"}
    exec("import os\nimport numpy as np\n"  # noqa: S102 - as a notebook has them: np a global of the cell
         "def draws(_=None):\n"
         "    return os.getpid(), float(np.random.rand())\n", namespace)
    return namespace["draws"]


def test_a_function_drawing_from_np_random_stays_warm_and_stats_count_its_attempts(server):
    pytest.importorskip("numpy")
    draws = _draws()
    client = server.client()
    client.submit(flaky).result(timeout=60)  # the keeper has run other attempts before (in fresh processes)
    results = [run(client, draws) for _ in range(5)]
    assert len({pid for pid, _ in results}) == 1, results  # the global stream's state is no part of the key
    assert len({value for _, value in results}) == 5  # each call its own seed: no repeated stream

    def shown():  # stats hear of it with the worker's next heartbeat
        return [w for worker in client.stats()["workers"] for w in worker["warm"]
                if w["function"] == "draws" and w["attempts"] == 5]

    warm = wait_for(shown, 10, message="the warm process in stats, with the 5 attempts it served")
    assert [w["pid"] for w in warm] == [results[0][0]]
