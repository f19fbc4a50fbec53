"""How a notebook calls things on the queue (issue 19): methods, map's one-argument rule and starmap,
calls refused in the kernel when their arguments cannot bind, ``async def``, generators, names, Ctrl-C.

The notebook is a real script run as ``__main__`` (as a kernel's code is) with numpy, pandas and
scikit-learn, against a real server with real workers; each check is computed in the "kernel" and
printed as JSON on the last line.
"""

from __future__ import annotations

import json
import operator
import os
import signal
import subprocess
import sys
import textwrap

from conftest import TOKEN, wait_for

NOTEBOOK = textwrap.dedent('''
    import asyncio, json, typing
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    import jupyter_taskq
    from jupyter_taskq import task_queue

    checks = {}
    X, y = make_classification(n_samples=80, n_features=5, random_state=0)

    # 1. methods: instance, classmethod (decorator above or below), staticmethod
    class Trainer:
        def __init__(self, C):
            self.C = C

        @task_queue(max_retries=0)
        def fit(self, n):
            model = LogisticRegression(C=self.C, max_iter=300).fit(X[:n], y[:n])
            return round(float(model.score(X, y)), 6)

        @task_queue(max_retries=0)
        @classmethod
        def default(cls, C):
            return cls(C)

        @classmethod
        @task_queue(max_retries=0)
        def doubled(cls, C):
            return cls(2 * C)

        @task_queue(max_retries=0)
        @staticmethod
        def mean(a):
            return float(np.mean(a))

    t = Trainer(0.5)
    plain = t.fit(60)
    checks["methods"] = [
        t.fit.put(60).result(60) == plain, Trainer.fit(t, 60) == plain, Trainer.fit.put(t, 60).result(60) == plain,
        t.fit.map([40, 60]).results(60) == [t.fit(40), plain],
        type(Trainer.default.put(3).result(60)).__name__, Trainer.default(3).C, Trainer.default.put(3).result(60).C,
        Trainer.doubled.put(3).result(60).C, t.doubled(3).C,
        Trainer.mean([1, 2, 6]), Trainer.mean.put([1, 2, 6]).result(60), t.mean.put([3]).result(60),
    ]

    # 2. map follows Python's map: one argument per item; several iterables zip; starmap unpacks
    class Point(typing.NamedTuple):
        x: int
        y: int

    @task_queue(max_retries=0)
    def describe(item, scale=1):
        return [type(item).__name__, int(scale * sum(item))]

    frame = pd.DataFrame({"a": [1, 2], "b": [10, 20]})
    pairs, points, rows = [(1, 2), (3, 4)], [Point(1, 2), Point(5, 6)], list(frame.itertuples(index=False))
    checks["map"] = [describe.map(pairs).results(60), describe.map(points).results(60),
                     describe.map(rows).results(60), describe.map(pairs, scale=10).results(60),
                     [describe(p) for p in pairs] == describe.map(pairs).results(60)]

    @task_queue(max_retries=0)
    def power(base, exponent, scale=1):
        return scale * base ** exponent

    checks["zip"] = power.map([2, 3, 10], [10, 3], scale=2).results(60)
    checks["starmap"] = [power.starmap([(2, 10), (3, 3)]).results(60), power.starmap(pairs, scale=3).results(60),
                         [int(v) for v in power.starmap(np.array([[2, 3]])).results(60)]]

    # 3. a call that cannot bind: the plain call's TypeError, in the kernel, and no task at all
    before = jupyter_taskq.connect().stats()["counts"]
    refused = []
    for attempt in (lambda: power.put(1), lambda: power.put(1, 2, 3, 4), lambda: power.put(1, 2, bogus=1),
                    lambda: power.map([1, 2]), lambda: power.starmap([(1, 2), (1,)]), lambda: t.fit.put(),
                    lambda: describe.map(pairs, nope=1)):
        try:
            attempt()
            refused.append("sent")
        except TypeError as exc:
            refused.append(str(exc))
    checks["refused"] = refused
    checks["no_task"] = jupyter_taskq.connect().stats()["counts"] == before

    # 4. async def runs to its end on the worker; a plain call returns the coroutine, as Python does
    @task_queue(max_retries=0)
    async def fetch(n):
        await asyncio.sleep(0.01)
        return n * 2

    coroutine = fetch(4)
    checks["async"] = [type(coroutine).__name__, asyncio.run(coroutine), fetch.put(21).result(60),
                       fetch.map([1, 2]).results(60)]

    # 5. generators are refused at decoration, with one line saying what to do
    refusals = []
    try:
        @task_queue(max_retries=0)
        def squares(n):
            yield from range(n)
    except TypeError as exc:
        refusals.append(str(exc))
    try:
        @task_queue
        async def ticks():
            yield 1
    except TypeError as exc:
        refusals.append(str(exc))
    checks["generators"] = refusals

    # 6. names: a handle's name, and tasks(name=...)
    @task_queue(max_retries=0)
    def fit_named(x):
        return x

    @task_queue(max_retries=0, name="fit_named_v2")  # contains "fit_named": tasks(name="fit_named") leaves it out
    def other(x):
        return x

    named = fit_named.map(range(3))
    named.wait(60)
    other.put(1).wait(60)
    found = jupyter_taskq.tasks(name="fit_named")
    checks["names"] = [named[0].name, t.fit.put(60).name, Trainer.default.put(1).name, other.put(2).name,
                       sorted(found.ids) == sorted(named.ids), len(jupyter_taskq.tasks(name="fit_named", limit=2)),
                       len(jupyter_taskq.tasks(name="fit_named_v2")), len(jupyter_taskq.tasks(name="no such task")),
                       jupyter_taskq.TaskHandle(named[1].id).name]
    print(json.dumps(checks))
''')


def run_notebook(tmp_path, server, source: str) -> dict:
    env = dict(os.environ, JUPYTER_TASKQ_URL=server.url, JUPYTER_TASKQ_TOKEN=TOKEN)
    script = tmp_path / "notebook.py"
    script.write_text(source)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_methods_map_binding_async_and_names(shared_server, tmp_path):
    checks = run_notebook(tmp_path, shared_server, NOTEBOOK)
    assert checks["methods"] == [True, True, True, True, "Trainer", 3, 3, 6, 6, 3.0, 3.0, 3.0]
    assert checks["map"] == [[["tuple", 3], ["tuple", 7]], [["Point", 3], ["Point", 11]],
                             [["Pandas", 11], ["Pandas", 22]], [["tuple", 30], ["tuple", 70]], True]
    assert checks["zip"] == [2048, 54]  # up to the shortest, as the builtin map
    assert checks["starmap"] == [[1024, 27], [3, 243], [8]]
    assert checks["refused"] == [
        "power() missing a required argument: 'exponent'", "power() too many positional arguments",
        "power() got an unexpected keyword argument 'bogus'", "power() missing a required argument: 'exponent'",
        "power() missing a required argument: 'exponent'", "Trainer.fit() missing a required argument: 'n'",
        "describe() got an unexpected keyword argument 'nope'"]
    assert checks["no_task"] is True
    assert checks["async"] == ["coroutine", 8, 42, [2, 4]]
    assert len(checks["generators"]) == 2
    assert "squares is a generator function" in checks["generators"][0]
    assert "ticks is an async generator function" in checks["generators"][1]
    assert all("return a list" in line and "\n" not in line for line in checks["generators"])
    assert checks["names"] == ["fit_named", "fit", "default", "fit_named_v2", True, 2, 2, 0, "fit_named"]


def test_a_call_that_cannot_bind_or_unpickle_is_not_retried(shared_server):
    """Sent by the Client directly (no kernel-side check): the worker fails it at once, saying why, rather
    than using every retry on a failure that no retry can change."""
    client = shared_server.client()
    unbound = client.submit(operator.add, (1, 2, 3), max_retries=3)
    unpicklable = client.submit(len, (Exploding(),), max_retries=3)
    for handle, kind in ((unbound, "TypeError"), (unpicklable, "ZeroDivisionError")):
        assert handle.wait(60) == "FAILED"
        info = handle.info()
        assert info["error"]["type"] == kind
        assert "not retried" in info["error"]["message"], info["error"]
        assert "final" not in info["error"]
        assert len(handle.attempts()) == 1


class Exploding:
    """Pickles fine, and raises when unpickled (as a payload whose classes a worker cannot rebuild)."""

    def __reduce__(self):
        return operator.truediv, (1, 0)


INTERRUPTED = textwrap.dedent('''
    import os, sys, time
    from jupyter_taskq import task_queue

    @task_queue(max_retries=0)
    def wait_for_file(path):
        while not os.path.exists(path):
            time.sleep(0.05)
        return "released"

    h = wait_for_file.put(sys.argv[1])
    print(h.id, flush=True)
    h.result()
''')


def test_ctrl_c_in_result_says_the_task_keeps_running(shared_server, tmp_path):
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    gate = tmp_path / "gate"
    env = dict(os.environ, JUPYTER_TASKQ_URL=shared_server.url, JUPYTER_TASKQ_TOKEN=TOKEN)
    proc = subprocess.Popen([sys.executable, str(script), str(gate)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        task_id = proc.stdout.readline().strip()
        client = shared_server.client()
        wait_for(lambda: client.get(task_id)["status"] == "RUNNING", 60, message="the task running")
        # Blocked in result()'s long poll: the process sleeps in the kernel, not running Python.
        wait_for(lambda: open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "S", 30,
                 message="the script waiting in result()")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = stderr.strip().splitlines()
    assert lines[-1] == (f"KeyboardInterrupt: interrupted; the task keeps running: `h.cancel()` stops it "
                         f"(task {task_id})"), stderr
    assert len(lines) <= 8 and "requests" not in stderr and "urllib3" not in stderr, stderr
    assert client.get(task_id)["status"] == "RUNNING"  # it does keep running
    gate.touch()
    assert client.result(task_id, timeout=60) == "released"
