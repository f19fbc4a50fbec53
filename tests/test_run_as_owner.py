"""Hub service: each task runs as its owner's Unix account (issue 15, `--run-as-owner`).

Two real Unix accounts (made here with ``useradd -m``; root only, as CI runs), each with a server of
its own (``JUPYTERHUB_USER`` names the owner), sharing one Redis queue and one files directory with a
``jupyter taskq worker --run-as-owner``: the worker side of the hub service, without the hub."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import TaskqServer, start_worker_machine, stop_processes, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="needs root and useradd to create the two Unix accounts (CI runs as root)")

USERS = ("taskq-owner-a", "taskq-owner-b")


@pytest.fixture(scope="module")
def accounts():
    made = []
    for name in USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
            made.append(name)
    yield {name: pwd.getpwnam(name) for name in USERS}
    for name in made:
        subprocess.run(["userdel", "-r", name], check=False, capture_output=True)


def who_am_i(name):
    """The task: who it runs as, and a file it writes in its working directory and saves as an output."""
    import jupyter_taskq

    with open(name, "w") as f:
        f.write("hello")
    jupyter_taskq.Output(name).save()
    return {"uid": os.getuid(), "euid": os.geteuid(), "gids": sorted(os.getgroups()), "gid": os.getgid(),
            "home": os.environ["HOME"], "user": os.environ["USER"], "logname": os.environ["LOGNAME"],
            "cwd": os.getcwd()}


def try_to_read(paths):
    found = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                f.read(1)
            found[path] = "read"
        except OSError as exc:
            found[path] = type(exc).__name__
    return found


def _image_dir() -> Path:
    """Images for all owners' tasks, built once (module-wide), where the owners can reach them (not under
    pytest's 0700 folders): as a hub's shared image_dir."""
    global _IMAGES
    if _IMAGES is None:
        _IMAGES = Path(tempfile.mkdtemp(prefix="taskq-owner-images-", dir="/tmp"))
        os.chmod(_IMAGES, 0o755)
    return _IMAGES


_IMAGES: Path | None = None


@pytest.fixture(scope="module", autouse=True)
def _drop_images():
    yield
    if _IMAGES is not None:
        shutil.rmtree(_IMAGES, ignore_errors=True)


@pytest.fixture
def queue(accounts, tmp_path, monkeypatch):
    files = Path(tempfile.mkdtemp(prefix="taskq-owners-", dir="/tmp"))  # not under /root or pytest's 0700 folder
    servers = {}
    try:
        for name in USERS:
            monkeypatch.setenv("JUPYTERHUB_USER", name)  # the server's tasks are this user's (owners.server_owner)
            root = tmp_path / name
            root.mkdir()
            redis = {"redis_url": servers[USERS[0]].redis.url} if servers else {}
            server = TaskqServer(root, cpu_workers=0, backend="redis", files_dir=str(files), **redis)
            servers[name] = server.start(wait_workers=False)
        monkeypatch.delenv("JUPYTERHUB_USER")
        worker = start_worker_machine(tmp_path, "owners", servers[USERS[0]].redis.url, files, "--gpus", "",
                                      "--cpu-workers", "1", "--run-as-owner", "--image-dir", str(_image_dir()))
        client = servers[USERS[0]].client()
        wait_for(lambda: sum(w["alive"] for w in client.stats()["workers"]) >= 1, 60, 0.1, "the owners' worker")
        yield servers, files, worker
        stop_processes([worker])
    finally:
        for server in servers.values():
            server.close()
        shutil.rmtree(files, ignore_errors=True)


def test_each_task_runs_as_its_owner_and_its_files_are_theirs(accounts, queue, monkeypatch):
    servers, files, _ = queue
    handles = {}
    for name in USERS:
        monkeypatch.chdir(accounts[name].pw_dir)  # the notebook's working directory: the owner's home
        handles[name] = servers[name].client().submit(who_am_i, (f"made-by-{name}.txt",))
    for name in USERS:
        account = accounts[name]
        seen = handles[name].result(timeout=60)
        assert seen["uid"] == seen["euid"] == account.pw_uid != 0
        assert seen["gid"] == account.pw_gid
        assert seen["gids"] == sorted(set(os.getgrouplist(name, account.pw_gid)))
        assert seen["home"] == account.pw_dir and seen["user"] == seen["logname"] == name
        assert seen["cwd"] == account.pw_dir
        made = Path(account.pw_dir) / f"made-by-{name}.txt"
        assert made.stat().st_uid == account.pw_uid, "a file the task writes is its owner's"
        task_id = handles[name].id
        saved = files / "outputs" / task_id / "1" / "files" / made.name
        assert saved.read_text() == "hello" and saved.stat().st_uid == account.pw_uid
        outputs = servers[name].client().get(task_id).get("outputs") or []
        assert [o["name"] for o in outputs] == [made.name]

    # B's task cannot read A's payload, result, log or saved output, nor list the queue's folders.
    a_id = handles[USERS[0]].id
    secrets = [str(files / "payloads" / f"{a_id}.payload"), str(files / "results" / f"{a_id}.result"),
               str(files / "outputs" / a_id / "1" / "log"), str(files / "outputs" / a_id / "1" / "files" /
                                                              f"made-by-{USERS[0]}.txt")]
    assert all(Path(p).exists() for p in secrets)
    monkeypatch.chdir(accounts[USERS[1]].pw_dir)
    snoop = servers[USERS[1]].client().submit(try_to_read, (secrets + [str(files / "outputs")],))
    assert snoop.result(timeout=60) == {p: "PermissionError" for p in secrets + [str(files / "outputs")]}


def test_a_task_whose_owner_is_no_account_here_fails_saying_so(queue, tmp_path, monkeypatch):
    servers, files, worker = queue
    monkeypatch.chdir(tmp_path)
    # The second server's user exists; a third name does not: its server shares the queue.
    monkeypatch.setenv("JUPYTERHUB_USER", "no-such-taskq-user")
    root = tmp_path / "stranger"
    root.mkdir()
    stranger = TaskqServer(root, cpu_workers=0, backend="redis", files_dir=str(files),
                           redis_url=servers[USERS[0]].redis.url, max_retries=0).start(wait_workers=False)
    try:
        handle = stranger.client().submit(try_to_read, ([],))
        wait_for(lambda: stranger.client().get(handle.id)["status"] == "FAILED", 60, 0.1, "the stranger's task fails")
        error = stranger.client().get(handle.id)["error"]
        assert "not a Unix account" in error["message"] and "no-such-taskq-user" in error["message"]
    finally:
        stranger.stop()


def test_a_worker_that_is_not_root_refuses_to_run_as_owners(accounts, tmp_path):
    state = Path(tempfile.mkdtemp(prefix="taskq-notroot-", dir="/tmp"))
    os.chown(state, accounts[USERS[0]].pw_uid, accounts[USERS[0]].pw_gid)
    try:
        done = subprocess.run(["setpriv", f"--reuid={accounts[USERS[0]].pw_uid}",
                               f"--regid={accounts[USERS[0]].pw_gid}", "--clear-groups",
                               sys.executable, "-m", "jupyter_taskq.worker", "--state-dir", str(state / "s"),
                               "--gpus", "", "--cpu-workers", "1", "--run-as-owner"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "--run-as-owner needs root" in done.stderr
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_the_hub_service_not_running_as_root_refuses_to_start_saying_why(accounts):
    """Multi-user mode needs root to run each task as its owner: without it the service does not start
    (rather than run everyone's tasks as one account), and says why and what to do."""
    from conftest import free_port

    account = accounts[USERS[0]]
    state = Path(tempfile.mkdtemp(prefix="taskq-hub-notroot-", dir="/tmp"))
    os.chown(state, account.pw_uid, account.pw_gid)
    env = dict(os.environ, HOME=str(state), JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{free_port()}",
               JUPYTERHUB_SERVICE_PREFIX="/services/taskq/", JUPYTERHUB_SERVICE_NAME="taskq",
               JUPYTERHUB_API_TOKEN="not-checked-before-the-refusal",
               JUPYTERHUB_API_URL=f"http://127.0.0.1:{free_port()}/hub/api")
    try:
        done = subprocess.run(["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups",
                               sys.executable, "-m", "jupyter_taskq.server.hub", f"--TaskQueue.state_dir={state / 's'}",
                               "--TaskQueue.gpus=[]", "--TaskQueue.cpu_workers=1"],
                              capture_output=True, text=True, timeout=120, env=env, cwd=state)
        said = done.stdout + done.stderr
        assert done.returncode != 0, said[-2000:]
        assert "not starting the hub service" in said and "not root" in said and "run_as_owner=False" in said, said[-2000:]
    finally:
        shutil.rmtree(state, ignore_errors=True)


def pid_and_uid(x=0):
    return os.getpid(), os.getuid(), x


def test_a_warm_process_serves_only_its_owner(accounts, queue, monkeypatch):
    servers, files, _ = queue
    a, b = (servers[name].client() for name in USERS)
    monkeypatch.chdir(accounts[USERS[0]].pw_dir)
    first = a.submit(pid_and_uid, keep_warm_seconds=60).result(timeout=60)
    again = a.submit(pid_and_uid, keep_warm_seconds=60).result(timeout=60)
    assert first[1] == again[1] == accounts[USERS[0]].pw_uid
    assert again[0] == first[0], "the owner's next attempt went to their warm process"
    monkeypatch.chdir(accounts[USERS[1]].pw_dir)
    theirs = b.submit(pid_and_uid, keep_warm_seconds=60).result(timeout=60)
    assert theirs[1] == accounts[USERS[1]].pw_uid and theirs[0] not in (first[0], again[0])
    # A map()'s shared part (the function travels once) reaches fresh and warm processes alike.
    monkeypatch.chdir(accounts[USERS[0]].pw_dir)
    big = b"x" * (2 * 1024 * 1024)  # captured: big enough to travel once, as a shared part

    def sized(x):
        return os.getpid(), os.getuid(), x + len(big)

    handles = a.submit_many(sized, range(4), keep_warm_seconds=60)
    assert any((files / "blobs").iterdir()), "the function went as a shared part"
    results = [h.result(timeout=60) for h in handles]
    assert [r[2] - len(big) for r in results] == list(range(4))
    assert {r[1] for r in results} == {accounts[USERS[0]].pw_uid}


def test_a_state_directory_the_owners_cannot_reach_is_refused(accounts, tmp_path):
    """pytest's tmp_path is under a folder only root may enter (like /root): owners could not reach
    their attempt folders, so the worker does not start, and says where to put the state instead."""
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    done = subprocess.run([sys.executable, "-m", "jupyter_taskq.worker", "--state-dir", str(closed / "state"),
                           "--gpus", "", "--cpu-workers", "1", "--run-as-owner"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "other users cannot enter" in done.stderr and "state_dir" in done.stderr


def plant_links(secret):
    """A hostile task: links and a FIFO in its attempt folder, where root later reads its log and outputs."""
    import jupyter_taskq

    folder = Path(os.environ["JUPYTER_TASKQ_ATTEMPT_DIR"])
    (folder / "files").mkdir(mode=0o700, exist_ok=True)
    os.symlink(secret, folder / "files" / "stolen")
    os.symlink(secret, folder / "planted-link")
    os.mkfifo(folder / "planted-fifo")
    with open("kept.txt", "w") as f:
        f.write("mine")
    jupyter_taskq.Output("kept.txt").save()
    print("done")
    return sorted(os.listdir(folder))


def test_what_a_task_plants_in_its_attempt_folder_is_removed_before_root_reads_it(accounts, queue, monkeypatch):
    servers, files, _ = queue
    name = USERS[0]
    monkeypatch.chdir(accounts[name].pw_dir)
    client = servers[name].client()
    handle = client.submit(plant_links, ("/etc/shadow",))
    assert {"planted-link", "planted-fifo"} <= set(handle.result(timeout=60))
    folder = files / "outputs" / handle.id / "1"
    left = {p.name: p for p in folder.rglob("*")}
    assert "planted-link" not in left and "planted-fifo" not in left and "stolen" not in left
    assert folder.stat().st_uid == 0 and (folder / "files").stat().st_uid == 0, "taken back: nothing swapped in"
    assert (folder / "files" / "kept.txt").stat().st_uid == accounts[name].pw_uid
    assert "done" in client.logs(handle.id)["data"]


def in_image(_=None):
    import jupyter_taskq
    import packaging

    jupyter_taskq.progress(1, 2, "in the image, as its owner")
    return os.getpid(), os.getuid(), packaging.__version__, jupyter_taskq.__file__


def test_images_on_a_hub_run_as_their_owner_warm_per_owner_and_refuse_commands(accounts, queue, monkeypatch):
    """A hub-wide queue builds images as root: wheels only (UV_NO_BUILD) and no image commands; the task
    runs in the image as its owner, warm processes stay each owner's, and the task-side API works there."""
    from jupyter_taskq import Image
    from jupyter_taskq.notebook.client import TaskFailed

    servers, _, _ = queue
    a, b = (servers[name].client() for name in USERS)
    image = Image(python_packages=["packaging==21.0"])
    marker = Path(tempfile.gettempdir()) / f"taskq-hub-image-command-{os.getpid()}"
    monkeypatch.chdir(accounts[USERS[1]].pw_dir)
    refused = b.submit(in_image, image=image.add_commands([f"touch {marker}"]))
    with pytest.raises(TaskFailed) as failed:
        refused.result(timeout=300)
    assert "not run by a hub-wide queue" in str(failed.value) and not marker.exists()
    assert b.get(refused.id)["attempt"] == 1  # final: no retry can change it
    # (this machine's own Python is under /root, 0700: the hub's build picks one every account can run)
    monkeypatch.chdir(accounts[USERS[0]].pw_dir)
    handles = []
    for _ in range(2):
        handles.append(a.submit(in_image, image=image, keep_warm_seconds=60))
        handles[-1].result(timeout=300)
    (pid, uid, version, module), again = handles[0].result(), handles[1].result()
    assert (uid, version) == (accounts[USERS[0]].pw_uid, "21.0") and ".taskside-" in module
    assert again[:2] == (pid, uid), "the owner's next attempt ran in their warm image process"
    assert handles[1].progress()["message"] == "in the image, as its owner"
    monkeypatch.chdir(accounts[USERS[1]].pw_dir)
    theirs = b.submit(in_image, image=image, keep_warm_seconds=60).result(timeout=120)
    assert theirs[1] == accounts[USERS[1]].pw_uid and theirs[0] != pid  # never the other owner's process

