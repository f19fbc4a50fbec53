"""``%%task_queue`` cells with IPython syntax, run by a real IPython shell against a real server:
``!cmd``, ``x = !cmd``, ``%time`` and ``get_ipython()`` work on the worker, what cannot run there is
refused before sending (naming the line), objects the cell changes in place come back, and a task
that reads standard input fails at once saying why."""

from __future__ import annotations

import os
import textwrap

import pytest
from IPython.core.interactiveshell import InteractiveShell

from conftest import TOKEN
from jupyter_taskq.notebook import client as client_module


@pytest.fixture(scope="module")
def shell(shared_server):
    """IPython's own shell in this process, with the magics loaded and the queue connected."""
    saved = client_module._default_client
    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext jupyter_taskq", store_history=False).raise_error()
    ip.run_cell(f"import jupyter_taskq; jupyter_taskq.connect({shared_server.url!r}, {TOKEN!r})").raise_error()
    yield ip
    client_module._default_client = saved


def run(ip: InteractiveShell, code: str):
    """Run a cell as a notebook would; return its value, re-raising what the cell raised."""
    result = ip.run_cell(textwrap.dedent(code).strip("\n"), store_history=False)
    result.raise_error()
    return result.result


def task_count(ip) -> int:
    return run(ip, "jupyter_taskq.connect().list(limit=1)")["total"]


def test_shell_escapes_time_and_get_ipython_run_on_the_worker(shell, tmp_path):
    (tmp_path / "a.txt").write_text("1")
    (tmp_path / "b.txt").write_text("2")
    run(shell, f"folder = {str(tmp_path)!r}")
    handle = run(shell, """
        %%task_queue --name shellcell --retries 0 --timeout 60
        files = !ls {folder}
        !echo "listed {len(files)} files in $folder"
        %time total = sum(range(1000))
        here = get_ipython().getoutput("echo from-getoutput").s
        def count(path):
            found = !ls {path}
            return len(found)
        counted = count(folder)
    """)
    values = handle.pull(timeout=60)
    assert values["files"] == ["a.txt", "b.txt"] and values["total"] == 499500
    assert values["here"] == "from-getoutput" and values["counted"] == 2
    assert shell.user_ns["files"] == ["a.txt", "b.txt"]  # pull() put them into the notebook
    log = handle.logs()
    assert f"listed 2 files in {tmp_path}" in log
    assert "CPU times: user" in log and "Wall time:" in log


@pytest.mark.parametrize("cell, line, reason", [
    ("x = 1\n%matplotlib inline", "line 3 of the cell, `%matplotlib inline`", "%matplotlib runs only in the kernel"),
    ("x = = 1", "line 2 of the cell, `x = = 1`", "invalid syntax"),
    ("len?", "line 2 of the cell, `len?`", "?-help runs only in the kernel"),
    ("%%time\nx = 1", "line 2 of the cell, `%%time`", "%%time runs only in the kernel"),
    ("k = get_ipython().kernel", "line 2 of the cell", "get_ipython().kernel exists only in the kernel"),
])
def test_what_a_worker_cannot_run_is_refused_before_sending(shell, cell, line, reason, capsys):
    from IPython.core.error import UsageError

    before = task_count(shell)
    with pytest.raises(UsageError) as refused:  # shown by IPython as one line, not a traceback
        run(shell, "%%task_queue --retries 0\n" + cell)
    assert str(refused.value).startswith("not sent: " + line) and reason in str(refused.value)
    assert "Traceback" not in capsys.readouterr().out
    assert task_count(shell) == before  # nothing was sent


def test_objects_changed_in_place_come_back_and_untouched_ones_stay(shell):
    run(shell, """
        import numpy as np
        from sklearn.linear_model import LinearRegression
        X = np.random.default_rng(0).normal(size=(10, 2))
        y = X @ np.array([2.0, -1.0]) + 0.5
        model = LinearRegression()
        history = []
        settings = {"runs": 0}
        untouched = [1, 2, 3]
        weights = np.zeros(500_000)   # 4 MB: pickled through a buffer, not as bytes
    """)
    handle = run(shell, """
        %%task_queue --retries 0 --timeout 60
        model.fit(X, y)
        history.append(round(model.score(X, y), 6))
        settings["runs"] += 1
        peek = len(untouched)
        weights[:10] = 1.0
    """)
    values = handle.pull(timeout=60)
    assert sorted(values) == ["history", "model", "peek", "settings", "weights"]  # not X, y, untouched
    assert run(shell, "float(weights.sum())") == 10.0
    assert run(shell, "history, settings, [round(c, 6) for c in model.coef_]") == ([1.0], {"runs": 1}, [2.0, -1.0])


def test_a_failing_cell_shows_its_source_line_in_the_remote_traceback(shell):
    handle = run(shell, """
        %%task_queue --retries 0 --timeout 60
        a = 1
        b = a / 0
    """)
    assert handle.wait(60) == "FAILED"
    tb = handle.info()["error"]["traceback"]
    assert 'line 3, in <module>' in tb and "b = a / 0" in tb  # the notebook cell's own line numbers


def test_input_in_a_cell_fails_at_once_saying_there_is_no_stdin(shell):
    handle = run(shell, """
        %%task_queue --retries 0 --timeout 60
        answer = input("your name? ")
    """)
    assert handle.wait(30) == "FAILED"
    error = handle.info()["error"]
    assert error["type"] == "EOFError" and "a task has no standard input" in error["message"]
    assert "your name? " in handle.logs()  # the prompt was written; nothing was waited for


@pytest.fixture(scope="module")
def kernel(shared_server):
    """A real ipykernel: it replaces builtins.input during a cell, which a task must not capture."""
    from jupyter_client.manager import start_new_kernel

    env = dict(os.environ, JUPYTER_TASKQ_URL=shared_server.url, JUPYTER_TASKQ_TOKEN=TOKEN)
    manager, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(shared_server.root))
    yield kc
    kc.stop_channels()
    manager.shutdown_kernel(now=True)


def test_input_in_a_kernel_cell_fails_at_once_saying_there_is_no_stdin(kernel):
    from test_kernel_integration import run as run_in_kernel

    run_in_kernel(kernel, "%load_ext jupyter_taskq")
    out = run_in_kernel(kernel, """
        %%task_queue --retries 0 --name asked
        lr = float(input("learning rate? "))
    """)
    assert out["error"] is None, out["error"]
    out = run_in_kernel(kernel, """
        try:
            asked.result(timeout=30)
        except EOFError as exc:
            print("cell:", exc)
    """)
    assert out["error"] is None, out["error"]
    assert out["stdout"].startswith("cell: a task has no standard input")


def test_input_in_a_decorated_function_fails_at_once_saying_there_is_no_stdin(kernel):
    """ipykernel swaps builtins.input for its own during a cell: the task must not try to take that along."""
    from test_kernel_integration import run as run_in_kernel

    out = run_in_kernel(kernel, """
        from jupyter_taskq import task_queue
        @task_queue(max_retries=0)
        def ask():
            return input("learning rate? ")
        try:
            ask.put().result(timeout=30)
        except EOFError as exc:
            print("decorator:", exc)
    """)
    assert out["error"] is None, out["error"]
    assert out["stdout"].startswith("decorator: a task has no standard input")


def test_group_results_can_return_exceptions_and_long_lists_say_how_many_are_shown(shell):
    group = run(shell, """
        from jupyter_taskq import task_queue
        @task_queue(max_retries=0)
        def inverse(x):
            return 1 / x
        inverse.map([-2, -1, 0, 1, 2] + list(range(3, 58)))
    """)
    assert len(group) == 60
    with pytest.raises(ZeroDivisionError):
        group.results(timeout=60)
    values = group.results(timeout=60, return_exceptions=True)
    assert values[:2] == [-0.5, -1.0] and values[3:5] == [1.0, 0.5] and len(values) == 60
    assert isinstance(values[2], ZeroDivisionError)
    html = group._repr_mimebundle_()["text/html"]
    from jupyter_taskq.notebook.display import HTML_LIST_LIMIT

    assert f"showing {HTML_LIST_LIMIT} of 60 tasks" in html and html.count("<li>") == HTML_LIST_LIMIT
    assert "showing" not in run(shell, "jupyter_taskq.tasks(limit=10)")._repr_mimebundle_()["text/html"]


def test_functions_a_cell_defines_work_in_a_process_pool_inside_the_task(shell):
    handle = run(shell, """
        %%task_queue --retries 0 --timeout 60
        import multiprocessing
        def square(x):
            return x * x
        with multiprocessing.get_context("fork").Pool(2) as pool:
            squares = pool.map(square, range(5))
    """)
    assert handle.result(timeout=60)["squares"] == [0, 1, 4, 9, 16]
    assert "not brought back, cannot be pickled: pool (multiprocessing.pool.Pool)" in handle.logs()


def test_worker_shell_without_ipython_runs_shell_escapes_and_time(tmp_path):
    """A worker whose Python has no IPython: the stand-in in cell.py, with IPython's own cell text."""
    import json
    import subprocess
    import sys

    source = InteractiveShell.instance().transform_cell(
        'found = !ls {folder}\n!echo "n=$n"\n%time total = sum(range(n))\nkind = type(get_ipython()).__name__\n')
    (tmp_path / "x.txt").write_text("")
    script = (
        "import json, sys; sys.modules['IPython'] = None\n"  # importing IPython now fails
        "from jupyter_taskq.notebook.cell import run_cell\n"
        f"values = run_cell({source!r}, {{'folder': {str(tmp_path)!r}, 'n': 4}}, ['found', 'total', 'kind'])\n"
        "print(json.dumps({'found': list(values['found']), 'joined': values['found'].s, 'total': values['total'],"
        " 'kind': values['kind'], 'ipython': 'IPython.core' in sys.modules}))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "n=4" and lines[1].startswith("CPU times: user") and lines[2].startswith("Wall time:")
    assert json.loads(lines[-1]) == {"found": ["x.txt"], "joined": "x.txt", "total": 6, "kind": "WorkerShell",
                                     "ipython": False}
