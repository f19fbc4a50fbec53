"""A task runs in the submitting notebook's world: its cwd, sys.path, environment and interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import venv


def describe_world():
    import os
    import sys

    import kernel_only_module  # importable only through the caller's sys.path

    return {"cwd": os.getcwd(), "var": os.environ.get("TASKQ_WORLD_VAR"), "module": kernel_only_module.VALUE,
            "python": sys.executable}


def test_task_sees_cwd_sys_path_and_environment(shared_server, tmp_path, monkeypatch):
    workdir, libdir = tmp_path / "work", tmp_path / "lib"
    workdir.mkdir()
    libdir.mkdir()
    (libdir / "kernel_only_module.py").write_text("VALUE = 'from the kernel sys.path'\n")
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(libdir))
    monkeypatch.setenv("TASKQ_WORLD_VAR", "hello from the kernel")
    world = shared_server.client().submit(describe_world).result(timeout=30)
    assert world["cwd"] == str(workdir)
    assert world["var"] == "hello from the kernel"
    assert world["module"] == "from the kernel sys.path"


NOTEBOOK_LIKE_SCRIPT = textwrap.dedent('''
    import sys
    from jupyter_taskq.notebook.client import Client

    SCALE = 3                                  # a notebook global

    class Point:                               # a class defined in the notebook
        def __init__(self, x):
            self.x = x

    def work(p):
        import only_in_this_env                # a package only the kernel's environment has
        return {"x": p.x * SCALE, "python": sys.executable, "prefix": sys.prefix,
                "pkg": only_in_this_env.NAME}

    client = Client(sys.argv[1], sys.argv[2])
    print(repr(client.submit(work, (Point(14),)).result(timeout=60)))
''')


def test_task_runs_in_the_kernels_own_interpreter(shared_server, tmp_path):
    """A kernel in another environment (a conda env, a venv) gets its own packages in the task."""
    env_dir = tmp_path / "kernel-env"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   text=True).strip()
    os.makedirs(site, exist_ok=True)
    # The kernel's environment has jupyter-taskq installed, as a user's conda env would: point it at the
    # environment running the tests (a venv's own site-packages is not the system one it inherits).
    with open(os.path.join(site, "taskq_under_test.pth"), "w") as f:
        f.write("\n".join(p for p in sys.path if p and os.path.isdir(p)) + "\n")
    with open(os.path.join(site, "only_in_this_env.py"), "w") as f:
        f.write("NAME = 'kernel env package'\n")
    script = tmp_path / "notebook_like.py"
    script.write_text(NOTEBOOK_LIKE_SCRIPT)
    from conftest import TOKEN

    out = subprocess.run([python, script, shared_server.url, TOKEN], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = eval(out.stdout.strip())
    assert result["x"] == 42
    assert result["pkg"] == "kernel env package"
    assert result["prefix"] == str(env_dir)
    assert result["prefix"] != sys.prefix


def pid_and_module_value(_=None):
    import os

    import edited_module  # lives in the notebook's folder; the test edits it between tasks

    return os.getpid(), edited_module.VALUE


def notebook_function(source: str):
    """A function defined as in a notebook (module __main__), so dill sends it by value."""
    namespace = {"__name__": "__main__"}
    exec(source, namespace)  # noqa: S102 - test-only
    return next(v for k, v in namespace.items() if callable(v) and not k.startswith("__"))


my_pid = notebook_function("def my_pid(_=None):\n    import os\n    return os.getpid()\n")


def test_edited_modules_take_effect_and_every_attempt_gets_a_fresh_process(make_server, tmp_path, monkeypatch):
    """Without keep_warm_seconds no two attempts share a process, so code is never stale."""
    client = make_server(gpus=[], cpu_workers=1).client()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "edited_module.py").write_text("VALUE = 1\n")
    first_pid, first = client.submit(pid_and_module_value).result(timeout=30)
    (tmp_path / "edited_module.py").write_text("VALUE = 2  # edited\n")
    second_pid, second = client.submit(pid_and_module_value).result(timeout=30)
    assert (first, second) == (1, 2)
    assert second_pid != first_pid

    a, b = (client.submit(my_pid).result(timeout=30) for _ in range(2))
    assert a != b  # plain tasks of one notebook do not share a process either
