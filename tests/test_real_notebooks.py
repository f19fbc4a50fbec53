"""Real data-science notebooks on the queue: a queued call computes what a plain call in the kernel
computes at submission, and what comes back is the kernel's own kind of object.

The notebook is real: a script run as ``__main__`` in its own process (as a kernel's code is), with a
local module ``mylib.py`` beside it, or a real IPython kernel (jupyter_client) for what only a kernel
has (cell sources in linecache, the ``%%task_queue`` magic). The code is real scikit-learn, pandas and
scipy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import TOKEN

MYLIB_V1 = textwrap.dedent('''
    VERSION = 1

    def transform(x):
        return x * 10

    class Model:
        def __init__(self, k):
            self.k = k
''')

# Everything a data scientist writes, in one notebook: each check is computed in the "kernel" (this
# script's __main__) and printed as JSON on the last line.
NOTEBOOK = textwrap.dedent('''
    import dataclasses, json, pickle, sys, traceback
    import joblib
    import numpy as np
    import pandas as pd
    from scipy.stats import ttest_ind
    from sklearn.datasets import make_classification
    from sklearn.model_selection import cross_val_score, cross_validate
    from sklearn.svm import SVC
    from jupyter_taskq import task_queue
    import mylib
    from mylib import VERSION, transform

    checks = {}
    X, y = make_classification(n_samples=90, n_features=6, random_state=0)

    # 1. library functions imported by name, used as globals (these raised RecursionError before)
    def describe(frame):
        return pd.concat([frame, frame]).shape[0]

    @task_queue
    def fit_one(p):
        scores = cross_validate(SVC(**p), X, y, cv=3)["test_score"]
        return {**p, "acc": float(cross_val_score(SVC(**p), X, y, cv=3).mean()), "cv": [float(s) for s in scores],
                "p": float(ttest_ind(X[:, 0], X[:, 1]).pvalue), "rows": describe(pd.DataFrame(X)),
                "Xy": make_classification(n_samples=5, random_state=1)[0].sum().round(6)}

    params = [{"C": c} for c in (0.1, 1.0, 10.0)]
    group = fit_one.map(params)
    checks["sweep"] = group.results(timeout=120) == [fit_one(p) for p in params]

    # 2. notebook classes come back as the kernel's classes, wherever they sit
    class MyModel:
        def __init__(self, w):
            self.w = w

        def predict(self, x):
            return x * self.w

    @dataclasses.dataclass
    class Holder:
        model: MyModel
        tags: list

    @task_queue
    def train(w):
        m = MyModel(w)
        bump = lambda v: v + 1          # a lambda in the body must not change anything
        return {"top": m, "nested": {"list": [m, MyModel(bump(w))]}, "holder": Holder(m, ["a"]), "cls": MyModel}

    handle = train.put(3)
    r = handle.result(60)
    checks["identity"] = [isinstance(r["top"], MyModel), isinstance(r["nested"]["list"][1], MyModel),
                          type(r["holder"]) is Holder, isinstance(r["holder"].model, MyModel), r["cls"] is MyModel,
                          r["nested"]["list"][0] is r["top"]]
    joblib.dump(r["holder"], "holder.joblib")
    checks["saved"] = [len(pickle.dumps(r["top"])) > 0, joblib.load("holder.joblib").model.predict(2)]
    checks["task_id"] = handle.id

    # 3. an exception whose __init__ takes more than a message
    class BadInput(ValueError):
        def __init__(self, msg, code):
            super().__init__(msg)
            self.code = code

    @task_queue
    def check(v):
        if v < 0:
            raise BadInput(f"negative: {v}", code=7)
        return v

    try:
        check.put(-1).result(60)
        checks["exception"] = "no exception"
    except BadInput as e:
        text = "".join(traceback.format_exception(e))
        checks["exception"] = [e.code, str(e), 'raise BadInput(f"negative: {v}", code=7)' in text]

    class StateStaysBehind(RuntimeError):       # its state cannot travel: its own class, with its message
        def __init__(self, rows):
            super().__init__(f"{len(rows)} rows left")
            self.cursor = (r for r in rows)

    @task_queue
    def leave(n):
        raise StateStaysBehind(list(range(n)))

    try:
        leave.put(3).result(60)
    except StateStaysBehind as e:
        checks["exception_state"] = [str(e), hasattr(e, "cursor")]

    # 4. a local module edited on disk without a reload: the queued call runs the kernel's version
    with open("mylib.py", "w") as f:
        f.write("VERSION = 2\\n\\ndef transform(x):\\n    return x * 100\\n\\nclass Model:\\n    pass\\n")

    @task_queue
    def use_lib(x):
        import mylib as again
        return [VERSION, transform(x), mylib.VERSION, mylib.transform(x), again.VERSION, mylib.Model(x)]

    plain, queued = use_lib(1), use_lib.put(1).result(60)
    checks["local"] = [plain[:5], queued[:5], isinstance(queued[5], mylib.Model), queued[5].k]

    # a local module holding what no pickle carries (a thread pool) goes by reference, with a warning
    import warnings
    with open("dblib.py", "w") as f:
        f.write("from concurrent.futures import ThreadPoolExecutor\\nPOOL = ThreadPoolExecutor(1)\\n"
                "def total(n):\\n    return POOL.submit(sum, range(n)).result()\\n")
    import dblib

    @task_queue
    def use_db(n):
        return dblib.total(n), mylib.VERSION

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        queued = use_db.put(5).result(60)
    checks["resources"] = [use_db(5), queued, [str(w.message).split(" sent")[0] for w in caught]]

    # 5. notebook functions and classes are reachable from __main__ inside the task
    def sq(v):
        return v * v

    @task_queue
    def pools(n):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with multiprocessing.get_context("fork").Pool(2) as pool:
            a = pool.map(sq, range(n))
        with ProcessPoolExecutor(2) as ex:
            b = list(ex.map(sq, range(n)))
        return [a, b, pickle.loads(pickle.dumps(sq))(3), pickle.loads(pickle.dumps(MyModel(2))).w]

    checks["pools"] = [pools(4), pools.put(4).result(120)]

    # 6. the rest of everyday notebook code: a cached recursive helper, an Enum, a lock, super()
    import enum, functools, threading
    LOCK = threading.Lock()

    class Stage(enum.Enum):
        TRAIN = 1
        TEST = 2

    @functools.lru_cache(maxsize=None)
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    class Tuned(MyModel):
        def predict(self, x):
            return super().predict(x) + 1

    @task_queue
    def everyday():
        with LOCK:
            return [fib(30), Stage.TEST, Tuned(2), Tuned(2).predict(3), fib]

    plain, queued = everyday(), everyday.put().result(60)
    checks["everyday"] = [queued[0] == plain[0], queued[1] is Stage.TEST, type(queued[2]) is Tuned,
                          queued[3] == plain[3], queued[4] is fib]
    print(json.dumps(checks))
''')

# A fresh kernel that never defined MyModel: the shipped class definition is used.
FRESH_KERNEL = textwrap.dedent('''
    import json, sys
    from jupyter_taskq.notebook.client import Client
    r = Client(sys.argv[1], sys.argv[2]).result(sys.argv[3], 60)
    print(json.dumps([type(r["top"]).__name__, r["top"].predict(5), type(r["holder"]).__name__]))
''')


def run_notebook(tmp_path, server, source: str, *args: str) -> dict | list:
    env = dict(os.environ, JUPYTER_TASKQ_URL=server.url, JUPYTER_TASKQ_TOKEN=TOKEN)
    script = tmp_path / "notebook.py"
    script.write_text(source)
    out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=240,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_everyday_notebook_on_the_queue(shared_server, tmp_path):
    (tmp_path / "mylib.py").write_text(MYLIB_V1)
    checks = run_notebook(tmp_path, shared_server, NOTEBOOK)
    assert checks["sweep"] is True
    assert checks["identity"] == [True] * 6
    assert checks["saved"] == [True, 6]
    assert checks["exception"] == [7, "negative: -1", True]
    assert checks["exception_state"] == ["3 rows left", False]
    # plain call == queued call: all of the kernel's mylib (VERSION 1, x*10), never the edited file's
    assert checks["local"] == [[1, 10, 1, 10, 1], [1, 10, 1, 10, 1], True, 1]
    assert checks["resources"] == [[10, 1], [10, 1], ["jupyter-taskq: local module dblib"]]
    assert checks["pools"] == [[[0, 1, 4, 9], [0, 1, 4, 9], 9, 2]] * 2
    assert checks["everyday"] == [True] * 5

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert run_notebook(fresh, shared_server, FRESH_KERNEL, shared_server.url, TOKEN, checks["task_id"]) == \
        ["MyModel", 15, "Holder"]


def test_payload_never_holds_the_queues_credentials(shared_server, tmp_path, monkeypatch):
    from jupyter_taskq.payload import PayloadError
    from jupyter_taskq.statedir import StateDir

    secret_token = "tq-secret-token-0123456789"
    monkeypatch.setenv("JUPYTER_TASKQ_TOKEN", secret_token)
    monkeypatch.setenv("JUPYTER_TASKQ_REDIS_URL", "redis://:redis-pass-98765@db.example:6379/0")
    monkeypatch.setenv("JUPYTER_TASKQ_URL", "https://alice:url-pass-4567@jh.example/user/alice/?token=url-tok-321")
    monkeypatch.setenv("JUPYTER_TOKEN", "jupyter-token-abcdef")
    monkeypatch.setenv("TASKQ_USER_SETTING", "kept")
    client = shared_server.client()
    handle = client.submit(os.getenv, ("TASKQ_USER_SETTING",))
    assert handle.result(timeout=60) == "kept"
    stored = StateDir(shared_server.state_dir).payload(handle.id).read_bytes()
    for secret in (secret_token, "redis-pass-98765", "url-pass-4567", "url-tok-321", "jupyter-token-abcdef"):
        assert secret.encode() not in stored
    assert b"jh.example/user/alice/" in stored  # the URL stays, without its credentials

    token_holder = {"auth": f"token {secret_token}"}  # a captured client/handle would carry this
    with pytest.raises(PayloadError, match="credentials"):
        client.submit(dict.get, (token_holder, "auth"))


def test_cell_sources_and_magic_in_a_real_kernel(shared_server, tmp_path):
    """A real IPython kernel: a remote traceback shows the notebook cell's lines; a %%task_queue cell's
    values come back as the kernel's classes; the cell may call a helper that uses scikit-learn."""
    from jupyter_client.manager import start_new_kernel

    (tmp_path / "mylib.py").write_text(MYLIB_V1)
    env = dict(os.environ, JUPYTER_TASKQ_URL=shared_server.url, JUPYTER_TASKQ_TOKEN=TOKEN)
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=env)
    try:
        def run(code: str) -> str:
            out = []

            def hook(msg):
                if msg["msg_type"] == "stream":
                    out.append(msg["content"]["text"])
                elif msg["msg_type"] == "error":
                    out.append("\n".join(msg["content"]["traceback"]))

            reply = kc.execute_interactive(code, timeout=180, output_hook=hook)
            text = "".join(out)
            assert reply["content"]["status"] == "ok", text
            return text

        run("%load_ext jupyter_taskq\nimport json, pickle, traceback\nfrom jupyter_taskq import task_queue\n"
            "from sklearn.datasets import load_iris\nfrom sklearn.model_selection import cross_val_score\n"
            "from sklearn.linear_model import LogisticRegression\nX, y = load_iris(return_X_y=True)")
        run("class Scored:\n    def __init__(self, score):\n        self.score = score\n\n"
            "def helper(c):\n    return Scored(round(float(cross_val_score(LogisticRegression(C=c, max_iter=500), X, y, cv=3).mean()), 6))\n\n"
            "@task_queue\ndef explode(n):\n    total = n * 2\n    raise KeyError(f'no column {total}')\n")
        text = run("try:\n    explode.put(4).result(60)\nexcept KeyError as e:\n"
                   "    print(json.dumps(''.join(traceback.format_exception(e))))")
        remote = json.loads(text.strip().splitlines()[-1])
        assert "raise KeyError(f'no column {total}')" in remote  # the cell's own line, from the kernel

        run("%%task_queue --name exp\nresult = helper(1.0)\nplain_type = type(result).__name__\n")
        text = run("exp.pull(timeout=120)\nprint(json.dumps([isinstance(result, Scored), len(pickle.dumps(result)) > 0,"
                   " result.score == helper(1.0).score, plain_type]))")
        assert json.loads(text.strip().splitlines()[-1]) == [True, True, True, "Scored"]

        # a cell that redefines a notebook class: the kernel gets the cell's new class, as if it ran here
        run("%%task_queue --name redo\nclass Scored:\n    def __init__(self, score):\n        self.score = score\n"
            "    def doubled(self):\n        return 2 * self.score\n\nagain = Scored(21)\n")
        text = run("redo.pull(timeout=120)\nprint(json.dumps([again.doubled(), isinstance(again, Scored), "
                   "len(pickle.dumps(again)) > 0]))")
        assert json.loads(text.strip().splitlines()[-1]) == [42, True, True]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
