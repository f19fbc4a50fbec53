"""Run the tutorial notebooks with nbval against one throwaway jupyter-taskq server.

`python -m pytest` (or `python -m pytest notebooks`) collects every ``*.ipynb`` here as an
nbval test, comparing each cell's output with the stored one unless the cell says
``# NBVAL_IGNORE_OUTPUT`` (or has the ``nbval-ignore-output`` tag). ``--nbval`` is not
needed; passing it (or ``--nbval-lax``) works too, and leaves collection to nbval.

Before the first notebook cell runs, one server is started for the whole session (simulated
GPUs 0 and 1, two CPU workers, its own state directory in a temporary folder) and its address
and token are exported as ``JUPYTER_TASKQ_URL`` / ``JUPYTER_TASKQ_TOKEN``, so the kernels nbval
starts find it the way kernels started by a Jupyter server with the extension do. The server
is stopped and the environment restored when the session ends.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from nbval.plugin import IPyNbFile

TESTS = Path(__file__).resolve().parent.parent / "tests"
ENV_VARS = ("JUPYTER_TASKQ_URL", "JUPYTER_TASKQ_TOKEN")

_server = None
_start_error: BaseException | None = None
_root: str | None = None
_saved_env: dict[str, str | None] = {}


def _test_helpers():
    """tests/conftest.py, loaded under a name of its own (it stays ``conftest`` for the tests)."""
    name = "_taskq_tests_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTS / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def pytest_collect_file(file_path, parent):
    opt = parent.config.option
    if file_path.suffix == ".ipynb" and not (opt.nbval or opt.nbval_lax):
        return IPyNbFile.from_parent(parent, path=file_path)


def _start_server() -> None:
    global _server, _root, _start_error
    if _start_error is not None:  # one failed start is enough: do not try again for every cell
        raise RuntimeError(f"the notebooks' jupyter-taskq server did not start: {_start_error}")
    helpers = _test_helpers()
    _root = tempfile.mkdtemp(prefix="taskq-notebooks-")
    server = helpers.TaskqServer(Path(_root), gpus=[0, 1], cpu_workers=2)
    try:
        server.start()
    except BaseException as exc:
        _start_error = exc
        server.stop()
        raise
    _server = server
    for var, value in zip(ENV_VARS, (server.url, helpers.TOKEN)):
        _saved_env[var] = os.environ.get(var)
        os.environ[var] = value


def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist (``-n``, pyproject's addopts) a notebook's cells run in order in one kernel: all the
    notebooks' cells go to one worker, against one server, as without xdist (tests/conftest.py's scheduler,
    also when only ``notebooks`` is given)."""
    return _test_helpers().pytest_xdist_make_scheduler(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Before nbval's own setup, which starts the notebook's kernel with this environment.
    if isinstance(item.parent, IPyNbFile) and _server is None:
        _start_server()


def pytest_sessionfinish(session, exitstatus):
    global _server, _root
    if _server is not None:
        _server.stop()
        _server = None
    for var, value in _saved_env.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    _saved_env.clear()
    if _root is not None:
        if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            shutil.rmtree(_root, ignore_errors=True)
        else:  # keep the server's log for whoever looks into the failure
            session.config.get_terminal_writer().line(f"notebooks' jupyter-taskq server log: {_root}/server.log")
        _root = None
