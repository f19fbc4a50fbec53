"""image=: a task runs in the Python environment it asks for, built once with uv and cached (issue 23).

Real builds from this machine's package sources (pip's configuration, translated for uv); small
pinned packages that install here (six, packaging, toolz, attrs)."""

from __future__ import annotations

import concurrent.futures
import json
import sys
import time

import pytest

from conftest import TaskqServer, wait_for
from jupyter_taskq import Image
from jupyter_taskq.notebook.client import TaskFailed


def notebook_function(source: str):
    """A function defined as in a notebook (module __main__), so it travels by value."""
    namespace = {"__name__": "__main__"}
    exec(source, namespace)  # noqa: S102 - test-only
    return next(v for k, v in namespace.items() if callable(v) and not k.startswith("__"))


versions = notebook_function(
    "def versions(name='packaging'):\n"
    "    import importlib.metadata, sys, os\n"
    "    try:\n"
    "        version = importlib.metadata.version(name)\n"
    "    except importlib.metadata.PackageNotFoundError:\n"
    "        version = None\n"
    "    return version, sys.executable, os.environ.get('IMAGE_MARK')\n")
make_version = notebook_function(
    "def make_version(text):\n"
    "    import packaging.version\n"
    "    return packaging.version.Version(text)\n")


warm_in_image = notebook_function(
    "def warm_in_image(_=None):\n"
    "    import os, sys\n"
    "    already = 'colorsys' in sys.modules\n"
    "    import colorsys, packaging\n"
    "    return os.getpid(), sys.executable, packaging.__version__, already\n")
task_side_api = notebook_function(
    "def task_side_api(name):\n"
    "    import jupyter_taskq\n"
    "    from jupyter_taskq import Output, on_start_value, progress\n"
    "    import packaging\n"
    "    progress(2, 4, 'half way in the image')\n"
    "    with open(name, 'w') as f:\n"
    "        f.write('made in an image')\n"
    "    saved = Output(name).save()\n"
    "    try:\n"
    "        jupyter_taskq.task_queue\n"
    "        rest = 'importable'\n"
    "    except AttributeError as exc:\n"
    "        rest = str(exc)\n"
    "    return saved, packaging.__version__, jupyter_taskq.__file__, on_start_value(), rest\n")
loaded = notebook_function(
    "def loaded():\n"
    "    return 'model loaded'\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    server = TaskqServer(root, gpus=[], cpu_workers=2, image_dir=str(root / "images")).start()
    yield server
    server.close()


def test_two_versions_of_one_package_run_side_by_side(server):
    client = server.client()
    old = client.submit(versions, image=Image(python_packages=["packaging==21.0"], env_vars={"IMAGE_MARK": "old"}))
    new = client.submit(versions, image=Image(python_packages=["packaging==24.0"]))
    assert old.result(timeout=240)[0::2] == ("21.0", "old")
    version, python, mark = new.result(timeout=240)
    assert (version, mark) == ("24.0", None)
    assert python != sys.executable
    env = old.environment()
    assert "packaging==21.0" in env["packages"] and len(env["hash"]) == 64
    assert env["spec"]["python_packages"] == ["packaging==21.0"]
    assert "building image" in old.logs()
    images = {i["hash"]: i for i in client.stats()["images"]}
    assert env["hash"] in images and images[env["hash"]]["bytes"] > 0 and images[env["hash"]]["last_used"]


def test_a_second_task_on_a_built_image_adds_under_a_second(server):
    client = server.client()
    image = Image(python_packages=["packaging==24.0"])
    client.submit(versions, image=image).result(timeout=240)  # built (or already there)

    def timed(**options):
        start = time.monotonic()
        client.submit(versions, **options).result(timeout=60)
        return time.monotonic() - start

    plain = min(timed() for _ in range(2))
    in_image = min(timed(image=image) for _ in range(2))
    assert in_image - plain < 1.0, (in_image, plain)


def test_a_misspelt_package_fails_with_the_installers_message_after_one_attempt(server):
    client = server.client()
    handle = client.submit(versions, image=Image(python_packages=["pakcaging-does-not-exist==1.0"]), max_retries=3)
    assert handle.wait(timeout=240) == "FAILED"
    error = handle.info()["error"]
    assert error["type"] == "ImageBuildError"
    assert "pakcaging-does-not-exist" in error["message"] and "not found" in error["message"]
    assert len(handle.attempts()) == 1
    assert "pakcaging-does-not-exist" in handle.logs()


def test_a_kernelspec_image_runs_in_that_kernels_interpreter(server):
    from jupyter_taskq.image import kernel_interpreter

    client = server.client()
    _version, python, _ = client.submit(versions, image=Image(kernel="python3")).result(timeout=60)
    assert python == kernel_interpreter("python3")
    handle = client.submit(versions, ("cloudpickle",), image=Image(python="/usr/bin/python3"))
    _version, python, _ = handle.result(timeout=60)  # Debian's Python: the runner's libraries come by path
    assert python == "/usr/bin/python3"
    assert handle.environment()["python"].startswith("3.11")


def test_a_result_from_a_package_the_kernel_lacks_says_so_in_one_line(server):
    from jupyter_taskq.notebook.imagecheck import ImageMismatch

    give_identity = notebook_function("def give_identity():\n    import toolz\n    return toolz.identity\n")
    client = server.client()
    with pytest.raises(ImageMismatch, match=r"toolz==0\.12\.1, this kernel does not have toolz"):
        client.submit(give_identity, image=Image(python_packages=["toolz==0.12.1"])).result(timeout=240)
    with pytest.warns(UserWarning, match=r"packaging==21\.0, this kernel has packaging "):
        value = client.submit(make_version, ("1.2",), image=Image(python_packages=["packaging==21.0"])).result(timeout=240)
    assert str(value) == "1.2"


def test_another_python_minor_version_is_refused_at_submit(server):
    client = server.client()
    other = "3.12" if sys.version_info[:2] != (3, 12) else "3.11"
    with pytest.raises(ValueError, match=rf"Python {sys.version_info[0]}\.{sys.version_info[1]}.*Python {other}"):
        client.submit(versions, image=Image(python_packages=["six==1.16.0"], python_version=other))
    # any REST client: the payload's Python against the spec's
    from jupyter_taskq.payload import dumps_call

    response = client.session.post(client.api + "tasks", data=dumps_call(versions, (), {}),
                                   params={"image": json.dumps({"python_packages": ["six"], "python_version": other})},
                                   headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 400 and "minor versions" in response.json()["message"]
    for bad in ('{"python_packages": "six"}', '{"python_packages": ["--index-url=http://x"]}', "not json",
                '{"kernel": "a b"}', '{"colour": 1}'):
        response = client.session.post(client.api + "tasks", data=dumps_call(versions, (), {}), params={"image": bad},
                                       headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 400 and "image" in response.json()["message"], bad


def test_ten_tasks_on_a_new_image_across_two_machines_sharing_image_dir_build_it_once(server, tmp_path):
    """A second server with its own workers and the same image_dir: as two machines sharing a filesystem."""
    other = TaskqServer(tmp_path, gpus=[], cpu_workers=2, image_dir=str(server.root / "images")).start()
    try:
        image = Image(python_packages=["attrs==22.2.0"])
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            handles = list(pool.map(lambda i: (server if i % 2 else other).client().submit(versions, ("attrs",),
                                                                                           image=image), range(10)))
        assert [h.result(timeout=300)[0] for h in handles] == ["22.2.0"] * 10
        digest = handles[0].environment()["hash"]
        assert {h.environment()["hash"] for h in handles} == {digest}
        build_log = (server.root / "images" / f"{digest}.log").read_text()
        assert build_log.count(" venv ") == 1 and build_log.count("built in") == 1
        assert digest in {i["hash"] for i in other.client().stats()["images"]}
    finally:
        other.close()


def test_eviction_frees_space_and_a_later_task_rebuilds(tmp_path):
    server = TaskqServer(tmp_path, gpus=[], cpu_workers=1, image_cache_bytes=1).start()  # keeps only what is in use
    try:
        client = server.client()
        first = client.submit(versions, ("six",), image=Image(python_packages=["six==1.16.0"]))
        assert first.result(timeout=240)[0] == "1.16.0"
        first_hash = first.environment()["hash"]
        second = client.submit(versions, ("six",), image=Image(python_packages=["six==1.17.0"]))
        assert second.result(timeout=240)[0] == "1.17.0"
        images = client.stats()["images"]
        assert [i["hash"] for i in images] == [second.environment()["hash"]]
        assert not (tmp_path / "state" / "images" / first_hash).exists()
        again = client.submit(versions, ("six",), image=Image(python_packages=["six==1.16.0"]))
        assert again.result(timeout=240)[0] == "1.16.0"
        assert "building image" in again.logs()
    finally:
        server.close()


@pytest.fixture(scope="module")
def one_worker(server, tmp_path_factory):
    """One worker (warm processes are each worker's own), on the same image_dir: images built once."""
    one = TaskqServer(tmp_path_factory.mktemp("images-warm"), gpus=[], cpu_workers=1,
                      image_dir=str(server.root / "images")).start()
    yield one
    one.close()


def test_a_warm_image_task_serves_three_calls_in_one_process_and_another_image_gets_its_own(one_worker):
    client = one_worker.client()
    old, new = Image(python_packages=["packaging==21.0"]), Image(python_packages=["packaging==24.0"])
    handles = []
    for _ in range(3):  # one after another: each finds the process the last one left warm
        handles.append(client.submit(warm_in_image, image=old, keep_warm_seconds=60))
        handles[-1].result(timeout=240)
    results = [h.result() for h in handles]
    pid, python, version, imported = results[0]
    assert (version, imported) == ("21.0", False) and python != sys.executable
    assert [r[0] for r in results] == [pid] * 3  # one process of the image's interpreter served all three
    assert [r[3] for r in results[1:]] == [True, True]  # with what it imported
    other_pid, other_python, other_version, _ = client.submit(warm_in_image, image=new, keep_warm_seconds=60).result(
        timeout=240)
    assert other_version == "24.0" and other_pid != pid and other_python != python
    warm = wait_for(lambda: [w for worker in client.stats()["workers"] for w in worker["warm"]
                             if w.get("image") == handles[0].environment()["hash"]], 10, message="the warm image process")
    assert warm[0]["pid"] == pid and warm[0]["attempts"] == 3
    # the same function without image= never lands in an image's warm process
    assert client.submit(warm_in_image, keep_warm_seconds=60).result(timeout=60)[1] == sys.executable


def test_a_task_in_an_image_uses_progress_output_and_on_start_value(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    client = server.client()
    handle = client.submit(task_side_api, ("made.txt",), image=Image(python_packages=["packaging==21.0"]),
                           on_start=loaded)
    saved, version, module, value, rest = handle.result(timeout=240)
    assert (saved, version, value) == ("made.txt", "21.0", "model loaded")
    assert ".taskside-" in module  # the worker's task-side copy, not an installed jupyter_taskq
    assert "not available inside an image=" in rest
    progress = handle.progress()
    assert (progress["done"], progress["total"], progress["message"]) == (2, 4, "half way in the image")
    assert [o["name"] for o in handle.outputs()] == ["made.txt"]
    assert open(handle.download("made.txt", tmp_path / "down")).read() == "made in an image"
    assert not any(p.startswith("jupyter") for p in handle.environment()["packages"])  # nothing installed for it


def test_the_task_side_copy_holds_every_module_the_package_imports_at_import_time():
    """`import jupyter_taskq` inside an image loads the copy (worker/taskside.py): a module that
    __init__ (or those modules) import at their top level but the copy lacks breaks every image task."""
    import ast
    from pathlib import Path

    import jupyter_taskq
    from jupyter_taskq.worker import taskside

    package = Path(jupyter_taskq.__file__).parent
    for name in taskside.MODULES:
        tree = ast.parse((package / name).read_text())
        for node in tree.body:  # top level only: imports inside functions are the kernel side's, lazily
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                assert f"{node.module}.py" in taskside.MODULES, f"{name} imports .{node.module}, not in the copy"
