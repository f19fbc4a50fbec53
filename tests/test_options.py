"""Task options are declared once (jupyter_taskq/options.py); everything that shows or checks them agrees.

Also the new options of issue 11 against a real server: retry_for, cpu= (affinity and thread
variables seen inside the task), memory= (the attempt ends with "exceeded memory=N MiB"), and
requests no live worker's machine can meet.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
from pathlib import Path

import pytest
import requests

from conftest import TOKEN, wait_for
from jupyter_taskq import options
from jupyter_taskq.notebook.client import Client
from jupyter_taskq.notebook.decorator import task_queue
from jupyter_taskq.payload import dumps_call
from jupyter_taskq.backends.taskstore import TASK_COLUMNS

AUTH = {"Authorization": f"token {TOKEN}"}
README = Path(__file__).resolve().parent.parent / "README.md"


# -- one declaration, every view agrees ---------------------------------------------------------------------------
def test_decorator_and_client_keywords_are_the_declared_options():
    decorator = inspect.signature(task_queue).parameters
    submit = inspect.signature(Client.submit).parameters
    for params in (decorator, submit):
        keywords = {n: p.default for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert keywords == {o.name: o.default for o in options.OPTIONS}
    with pytest.raises(TypeError, match="unexpected keyword argument.*'colour'"):
        task_queue(colour="red")


def test_magic_flags_are_the_declared_flags():
    from jupyter_taskq.notebook.magic import TaskQueueMagics

    parser = TaskQueueMagics.task_queue.parser
    flags = {a.option_strings[0]: a.dest for a in parser._actions if a.option_strings and a.dest != "help"}
    assert flags == {o.flag: o.name for o in options.OPTIONS if o.flag}


def test_readme_table_is_generated_from_the_declarations():
    text = README.read_text()
    assert options.readme_with_table(text) == text, \
        "README's task-options table is stale: run `python -m jupyter_taskq.options README.md`"


def test_every_rest_option_is_stored_and_validated_by_the_server():
    from jupyter_taskq.server.service import OPTION_NAMES

    assert set(OPTION_NAMES) == {o.name for o in options.OPTIONS if o.rest}
    assert set(OPTION_NAMES) <= set(TASK_COLUMNS)


def _out_of_range(option):
    if option.kind in ("int", "seconds", "number"):
        return [option.maximum * 10 + 1, option.minimum - 1, "inf", "nan", "1e400"]
    if option.kind == "memory":
        return [option.maximum + 1, 0, "lots"]
    return []


@pytest.mark.parametrize("option", [o for o in options.OPTIONS if _out_of_range(o)], ids=lambda o: o.name)
def test_out_of_range_refused_alike_in_the_kernel_and_by_rest(shared_server, option):
    data = dumps_call(abs, (-1,))
    for value in _out_of_range(option):
        with pytest.raises(ValueError, match=f"'{option.name}'"):
            task_queue(**{option.name: value})
        response = requests.post(shared_server.url + "taskq/api/tasks", data=data, params={option.name: value},
                                 headers={**AUTH, "Content-Type": "application/octet-stream"})
        assert response.status_code == 400, (option.name, value, response.text)
        message = response.json()["message"]
        assert f"'{option.name}'" in message and option.range_text.split(" (")[0] in message, message


def test_task_json_shows_every_option_and_is_strict_json(shared_server):
    client = shared_server.client()
    handle = client.submit(abs, (-3,), cpu=1, memory="512M", retry_for=[KeyError, "requests.ConnectionError"],
                           keep_warm_seconds=5, timeout=60)
    assert handle.result(timeout=30) == 3
    raw = requests.get(shared_server.url + f"taskq/api/tasks/{handle.id}", headers=AUTH).text
    task = json.loads(raw, parse_constant=lambda c: pytest.fail(f"{c} in the task JSON"))
    assert {o.name for o in options.OPTIONS if o.rest} <= set(task)
    assert (task["cpu"], task["memory"], task["retry_for"]) == (1.0, 512, ["KeyError", "requests.ConnectionError"])
    assert task["keep_warm_seconds"] == 5.0 and task["timeout"] == 60.0


def test_workers_report_their_machine_and_too_large_requests_are_refused(shared_server):
    workers = [w for w in shared_server.client().stats()["workers"] if w["alive"]]
    assert all(w["cpus"] >= 1 and w["memory_mib"] > 0 for w in workers)
    cores = max(w["cpus"] for w in workers if w["pool"] == "cpu")
    with pytest.raises(Exception, match=rf"cpu={cores + 1}.*machines there are: .*{cores} cores"):
        shared_server.client().submit(abs, (1,), cpu=cores + 1)


# -- retry_for ----------------------------------------------------------------------------------------------------
def raise_(kind: str):
    import json as json_module

    import requests as requests_module

    errors = {"key": KeyError("k"), "decode": json_module.JSONDecodeError("bad", "doc", 0),
              "connection": requests_module.exceptions.ConnectionError("down")}
    raise errors[kind]


@pytest.mark.parametrize("kind, retry_for, attempts, last_type", [
    ("key", [ValueError], 1, "KeyError"),  # not listed: fails at once
    ("decode", [ValueError], 3, "json.decoder.JSONDecodeError"),  # a subclass of a listed type: retried
    ("connection", ["requests.ConnectionError"], 3, "requests.exceptions.ConnectionError"),  # a package's alias
    ("key", None, 3, "KeyError"),  # default: every failure is retried
])
def test_retry_for_retries_only_listed_types(shared_server, kind, retry_for, attempts, last_type):
    client = shared_server.client()
    task = client.submit(raise_, (kind,), max_retries=2, retry_for=retry_for)
    [done] = client.wait([task.id], timeout=60)
    assert done["status"] == "FAILED"
    assert done["attempt"] == attempts
    assert done["error"]["type"] == last_type and "mro" not in done["error"]


# -- cpu= and memory= inside the task -----------------------------------------------------------------------------
def seen_inside():
    import os as os_module

    return (sorted(os_module.sched_getaffinity(0)),
            {k: os_module.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                   "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")})


def test_cpu_pins_the_task_and_sets_thread_variables(shared_server):
    client = shared_server.client()
    cores, env = client.submit(seen_inside, cpu=0.5).result(timeout=30)
    assert len(cores) == 1 and set(cores) <= os.sched_getaffinity(0)
    assert set(env.values()) == {"1"}
    # The next task without cpu= on the same workers sees all cores again and none of the variables set.
    for _ in range(3):
        cores, env = client.submit(seen_inside).result(timeout=30)
        assert set(cores) == os.sched_getaffinity(0)
        assert all(os.environ.get(k) == v for k, v in env.items())


def allocate(mib: int) -> int:
    block = bytearray(mib * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block) // (1024 * 1024)


def test_memory_limit_ends_the_attempt_with_a_clear_error_not_retried_unless_asked(shared_server):
    client = shared_server.client()
    task = client.submit(allocate, (1500,), memory=400, max_retries=1)
    [done] = client.wait([task.id], timeout=60)
    assert done["status"] == "FAILED" and done["attempt"] == 1, done  # the same call would run out again
    assert re.match(r"exceeded memory=400 MiB \(peak \d+ MiB\) \(not retried", done["error"]["message"]), done["error"]
    assert done["error"]["type"] == "MemoryLimitExceeded"
    asked = client.submit(allocate, (1500,), memory=400, max_retries=1, retry_for=["MemoryLimitExceeded"])
    [done] = client.wait([asked.id], timeout=60)
    assert done["status"] == "FAILED" and done["attempt"] == 2, done  # retried, as asked
    assert re.fullmatch(r"exceeded memory=400 MiB \(peak \d+ MiB\)", done["error"]["message"]), done["error"]
    # Within the limit it runs; and the workers are fine afterwards, with no limit left behind.
    assert client.submit(allocate, (100,), memory=400).result(timeout=30) == 100
    assert client.submit(allocate, (600,)).result(timeout=30) == 600


def test_memory_text_is_parsed_to_mib():
    assert options.parse_memory("memory", "16G") == 16384
    assert options.parse_memory("memory", "512M") == 512
    assert options.parse_memory("memory", "1.5GiB") == 1536
    assert options.parse_memory("memory", 2048) == 2048
    assert math.isfinite(options.check(options.BY_NAME["cpu"], "0.25"))
