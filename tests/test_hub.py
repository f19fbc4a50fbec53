"""One queue for a whole JupyterHub (issue 15), tested end to end against a real JupyterHub.

A real ``jupyterhub`` (its real proxy, configurable-http-proxy from npm) runs the hub service
``python -m jupyter_taskq.hub.service`` (= ``jupyter taskq hub-service``) as a managed service, as root,
with ``TaskQueue.run_as_owner`` on (the default): each task runs as its owner's Unix account. The hub's
users are real Unix accounts that this module creates with ``useradd -m`` (root only, as CI runs; it
deletes only the accounts it made): taskq-alice and taskq-bob each spawn a real single-user server with
JupyterHub's default LocalProcessSpawner (so their servers and kernels run as those accounts, at home),
taskq-dave (whose group has the custom:taskq:admin scope) submits straight to the service with his hub token, and
taskq-carol is a hub admin with no account and no server. Each user submits through their own server
(over REST, and from a real kernel), which forwards to the service with its JupyterHub token: the
service learns who they are from the hub, never from the request.

Asserted: a user cannot see, cancel, retry, delete or download another's task (404); each task ran
with its owner's uid, gid and home (submitted over REST, from each user's kernel, and straight to the
service), a file a task saves belongs to its owner, and a task submitted from a folder its owner cannot
enter fails saying so; admins (and the admin group) see everyone's; fair share hands a freed GPU to the
user with the least recent GPU time, a user at the concurrent-GPU quota waits while another runs, the
queued-tasks quota refuses naming itself; the change feed and task groups name only a user's own
tasks; anonymous and forged requests are refused without a server error. The service has two
simulated GPUs (as in the other GPU tests).

What a task touches must be reachable by its owner: the service's state directory and the gate files
live in folders made under /tmp (not under pytest's root-only tmp_path), and the test submits from a
shared working directory there. The users must be able to run the Python this runs on: where its
installation is closed to them (e.g. a pyenv under /root, mode 0700) the users' servers run a venv made
from the system's Python of the same version that loads this environment's packages; where there is
none, the module is skipped saying why.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
import requests

from conftest import free_port, run_coroutine, wait_for
from jupyter_taskq.notebook.client import Client, TaskqError

pytest.importorskip("jupyterhub", reason="jupyterhub is not installed (pip install '.[test]')")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("userdel"),
                                 reason="needs root and useradd/userdel: the test creates the hub's users as Unix "
                                        "accounts, whose tasks the service runs as them (CI runs as root)")]

REPO = Path(__file__).resolve().parent.parent
NODE_DIR = REPO / ".hub-node"  # where the tests install configurable-http-proxy (git-ignored)
DRIVER_TOKEN = "taskq-hub-test-driver-token"
MAX_QUEUED = 4
ALICE, BOB, DAVE = "taskq-alice", "taskq-bob", "taskq-dave"  # Unix accounts (made here unless they exist)
CAROL = "taskq-carol"  # a hub admin: no account, no server
ACCOUNTS = (ALICE, BOB, DAVE)


def proxy_command() -> str:
    found = shutil.which("configurable-http-proxy") or NODE_DIR / "node_modules" / ".bin" / "configurable-http-proxy"
    if Path(found).exists():
        return str(found)
    if not shutil.which("npm"):
        pytest.skip("JupyterHub's proxy needs configurable-http-proxy: npm is not installed")
    done = subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR),
                           "configurable-http-proxy"], capture_output=True, text=True, timeout=600)
    if done.returncode or not Path(found).exists():
        pytest.skip(f"could not install configurable-http-proxy with npm: {done.stderr[-500:]}")
    return str(found)


# -- the hub's users: Unix accounts, and a Python they can run ---------------------------------------------
def delete_account(name: str) -> None:
    """Remove an account this module made, after ending what the hub left running as it (by pid)."""
    import psutil

    uid = pwd.getpwnam(name).pw_uid
    left = [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid]
    for process in left:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(left, timeout=10)
    subprocess.run(["userdel", "-r", name], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def accounts():
    made = []
    try:
        for name in ACCOUNTS:
            try:
                pwd.getpwnam(name)
            except KeyError:
                subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True, timeout=60)
                made.append(name)
        yield {name: pwd.getpwnam(name) for name in ACCOUNTS}
    finally:
        for name in made:
            delete_account(name)


def runs_for(python: str, account) -> bool:
    """Whether ``account`` can run a single-user server and a task client on ``python``."""
    try:
        done = subprocess.run([python, "-c", "import jupyterhub.singleuser, ipykernel, jupyter_taskq.notebook.client"],
                              user=account.pw_uid, group=account.pw_gid, extra_groups=[], cwd=account.pw_dir,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": account.pw_dir},
                              capture_output=True, timeout=120)
    except OSError:
        return False
    return done.returncode == 0


def system_pythons():
    """Other interpreters of this Python's version (e.g. the distribution's, where this one is a pyenv's)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    seen = {os.path.realpath(sys.executable)}
    for path in (f"/usr/bin/{version}", f"/usr/local/bin/{version}", shutil.which(version)):
        real = os.path.realpath(path) if path else None
        if real and real not in seen and os.access(real, os.X_OK):
            seen.add(real)
            yield real


def venv_on(python: str, where: Path) -> str | None:
    """A venv from ``python`` that loads this environment's packages (and its Jupyter config and data)."""
    if subprocess.run([python, "-m", "venv", "--without-pip", str(where)], capture_output=True,
                      timeout=120).returncode:
        return None
    made = str(where / "bin" / "python")
    site = subprocess.run([made, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, timeout=60).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    Path(site, "taskq-test-environment.pth").write_text(
        "".join(f"import site; site.addsitedir({path!r})\n" for path in ours))
    for name in ("etc", "share"):  # jupyter_server_config.d (the extension enabled), kernel specs
        if Path(sys.prefix, name).exists():
            (where / name).symlink_to(Path(sys.prefix, name))
    return made


@pytest.fixture(scope="module")
def user_python(accounts):
    """The Python the users' servers (and kernels) run on: this one, where the users can run it; else a
    venv on the system's Python of the same version that loads this environment's packages."""
    account = accounts[ALICE]
    if runs_for(sys.executable, account):
        yield sys.executable
        return
    folder = Path(tempfile.mkdtemp(prefix="taskq-hub-python-", dir="/tmp"))
    os.chmod(folder, 0o755)
    try:
        found = next((made for i, python in enumerate(system_pythons())
                      if (made := venv_on(python, folder / f"venv{i}")) and runs_for(made, account)), None)
        if found is None:
            pytest.skip(f"the hub's users cannot run this Python ({sys.executable} -> "
                        f"{os.path.realpath(sys.executable)}: a folder on the way is closed to them, e.g. /root) "
                        f"or import its packages, and there is no python{sys.version_info.major}."
                        f"{sys.version_info.minor} of the system's to run them on: put the checkout and its venv "
                        "where every user can read them")
        yield found
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def shared():
    """Under /tmp, open to every user (not pytest's root-only tmp_path): the service's state directory,
    the tasks' gate files, and the working directory the test submits from."""
    folder = Path(tempfile.mkdtemp(prefix="taskq-hub-", dir="/tmp"))
    try:
        for sub in ("gates", "work"):
            (folder / sub).mkdir()
            os.chmod(folder / sub, 0o755)
        os.chmod(folder, 0o755)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def in_a_shared_folder(shared, monkeypatch):
    """A task runs in the working directory it was submitted from: one its owner can enter."""
    monkeypatch.chdir(shared / "work")


@pytest.fixture
def gate(shared, request):
    """A file the blocking tasks wait for, in a folder every owner can read."""
    return shared / "gates" / f"{request.node.name}-gate"


def wait_for_file(path, timeout=120):
    import os as _os
    import time as _time

    deadline = _time.monotonic() + timeout
    while not _os.path.exists(path):
        if _time.monotonic() > deadline:
            raise TimeoutError(path)
        _time.sleep(0.05)
    return "opened"


def add(a, b):
    return a + b


def who_am_i():
    import os as _os

    return {"uid": _os.getuid(), "euid": _os.geteuid(), "gid": _os.getgid(), "home": _os.environ["HOME"],
            "user": _os.environ["USER"], "cwd": _os.getcwd()}


class Hub:
    def __init__(self, root: Path, state: Path, user_python: str):
        self.root = root
        self.state = state  # the service's state directory
        self.user_python = user_python
        self.port, self.hub_port, self.api_port, self.service_port = (free_port() for _ in range(4))
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = root / "hub.log"
        self.proc: subprocess.Popen | None = None

    def config(self) -> str:
        service_url = f"http://127.0.0.1:{self.service_port}"
        overrides = json.dumps({f"user:{ALICE}": {"max_gpus": 1}, f"user:{DAVE}": {"max_queued": 20}})
        # As root, with run_as_owner on (the default): each task runs as its owner's account.
        service_cmd = [sys.executable, "-m", "jupyter_taskq.hub.service", f"--TaskQueue.state_dir={self.state}",
                       "--TaskQueue.gpus=[0,1]", "--TaskQueue.cpu_workers=1",  # simulated GPUs 0 and 1
                       f"--TaskQueue.max_queued_per_user={MAX_QUEUED}",
                       f"--TaskQueue.quota_overrides={overrides}", "--ServerApp.allow_root=True"]
        return f"""
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {self.port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {self.hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.api_port}"
c.ConfigurableHTTPProxy.command = [{proxy_command()!r}]
c.ConfigurableHTTPProxy.should_start = True
c.JupyterHub.db_url = "sqlite:///{self.root / 'hub.sqlite'}"
c.JupyterHub.cookie_secret_file = "{self.root / 'cookie_secret'}"
c.JupyterHub.pid_file = "{self.root / 'hub.pid'}"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {{{ALICE!r}, {BOB!r}, {DAVE!r}}}
c.Authenticator.admin_users = {{{CAROL!r}}}
c.JupyterHub.load_groups = {{"taskq-admins": {{"users": [{DAVE!r}]}}}}
# JupyterHub's default spawner: each user's server runs as their Unix account, in their home
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [{self.user_python!r}, "-m", "jupyterhub.singleuser"]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
# the hub-wide queue (docs/jupyterhub.md)
c.JupyterHub.services = [
    {{"name": "taskq", "url": "{service_url}", "command": {service_cmd!r}}},
    {{"name": "driver", "api_token": "{DRIVER_TOKEN}"}},
]
# the queue's admins: a JupyterHub scope, granted through a role (carol is a hub admin: admin:users does too)
c.JupyterHub.custom_scopes = {{"custom:taskq:admin": {{"description": "See and manage every user's tasks in the "
                                                                   "jupyter-taskq hub service"}}}}
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", "access:services!service=taskq"]}},
    {{"name": "taskq-admin", "groups": ["taskq-admins"], "scopes": ["custom:taskq:admin"]}},
    {{"name": "taskq-service", "services": ["taskq"], "scopes": ["list:users", "read:users", "read:groups"]}},
    {{"name": "admin", "services": ["driver"]}},
]
c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server", "access:services!service=taskq",
                                 "custom:taskq:admin"]  # held only by the queue's admins (JupyterHub keeps the subset)
c.Spawner.environment = {{"JUPYTER_TASKQ_HUB_SERVICE": "taskq",
                          "JUPYTER_TASKQ_HUB_URL": "{service_url}/services/taskq/"}}
"""

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.url}hub/api/{path}",
                                headers={"Authorization": f"token {DRIVER_TOKEN}"}, timeout=30, **kwargs)

    def start(self) -> "Hub":
        (self.root / "jupyterhub_config.py").write_text(self.config())
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(self.root / "jupyterhub_config.py")],
                                     cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._answers, 90, 0.2, f"JupyterHub (log: {self.log_path})")
        wait_for(lambda: self._service_answers(), 90, 0.2, f"the taskq hub service (log: {self.log_path})")
        return self

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"jupyterhub exited {self.proc.returncode}:\n{self.log_path.read_text()[-4000:]}")
        try:
            return self.api("GET", "").status_code == 200
        except requests.RequestException:
            return False

    def _service_answers(self) -> bool:
        self._answers()
        try:
            return requests.get(f"http://127.0.0.1:{self.service_port}/services/taskq/taskq/api/stats",
                                timeout=2).status_code in (401, 403)
        except requests.RequestException:
            return False

    def token(self, user: str) -> str:
        answer = self.api("POST", f"users/{user}/tokens", json={"note": "taskq test"})
        assert answer.status_code == 201, answer.text
        return answer.json()["token"]

    def spawn(self, user: str) -> Client:
        answer = self.api("POST", f"users/{user}/server")
        assert answer.status_code in (201, 202), answer.text
        wait_for(lambda: (self.api("GET", f"users/{user}").json().get("servers", {}).get("", {}).get("ready")),
                 120, 0.2, f"{user}'s server (log: {self.log_path})")
        return Client(f"{self.url}user/{user}/", self.token(user), reconnect_for=0)

    def service_client(self, user: str) -> Client:
        """The hub service itself, through the hub's proxy, with the user's own hub token."""
        return Client(f"{self.url}services/taskq/", self.token(user), reconnect_for=0)

    def stop(self) -> None:
        """SIGTERM (the hub stops the proxy, the service and users' servers), then SIGKILL whatever of its
        tree is left: each of those runs in a session of its own, out of reach of a process-group kill."""
        import psutil

        if self.proc is None:
            return
        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for child in tree:
            try:
                tree += child.children(recursive=True)
                child.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.fixture(scope="module")
def hub(tmp_path_factory, accounts, user_python, shared):
    hub = Hub(tmp_path_factory.mktemp("hub"), shared / "state", user_python)
    try:
        yield hub.start()
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def users(hub):
    return {ALICE: hub.spawn(ALICE), BOB: hub.spawn(BOB)}


def test_each_user_sees_only_their_own_tasks(hub, users):
    alice, bob = users[ALICE], users[BOB]
    handle = alice.submit(add, (2, 3), name="alice-add")
    assert handle.result(timeout=120) == 5
    task = alice.get(handle.id)
    assert task["owner"] == ALICE, "the owner is the hub user whose server submitted it"
    assert task["log"]["url"].startswith(f"/user/{ALICE}/taskq/api/"), "links point at the user's own server"
    mine = bob.submit(add, (1, 1), name="bob-add")
    assert mine.result(timeout=120) == 2 and bob.get(mine.id)["owner"] == BOB

    assert [t["id"] for t in bob.list()["tasks"]] == [mine.id], "bob lists only his own"
    assert bob.list()["total"] == 1
    for call in (lambda: bob.get(handle.id), lambda: bob.result(handle.id), lambda: bob.retry(handle.id),
                 lambda: bob.delete(handle.id), lambda: bob.logs(handle.id)):
        with pytest.raises(TaskqError) as refused:
            call()
        assert refused.value.status_code == 404, "someone else's task is 'no such task'"
    cancelled = bob.cancel([handle.id])
    assert cancelled["cancelled"] == [] and cancelled["not_cancelled"][0]["reason"] == "no such task"
    assert bob.tasks_by_id([handle.id])[0]["status"] == "LOST"
    assert alice.get(handle.id)["status"] == "COMPLETE", "alice's task is untouched"

    stats = bob.stats()
    assert set(stats["users"]) == {BOB} and stats["users"][BOB]["tasks"] == {"COMPLETE": 1}
    assert stats["counts"]["COMPLETE"] == 1 and stats["counts"]["RUNNING"] == 0, "his counts, every status"


def test_the_owner_comes_from_the_hub_not_the_request(hub, users):
    from jupyter_taskq.payload import dumps_call

    bob = users[BOB]
    claimed = bob.session.post(bob.api + "tasks", params={"owner": ALICE}, data=dumps_call(add, (1, 2), {}),
                               headers={"Content-Type": "application/octet-stream"}, timeout=30)
    assert claimed.status_code == 400 and "owner" in claimed.json()["message"], "owner is no option a client sets"
    anonymous = requests.get(f"http://127.0.0.1:{hub.service_port}/services/taskq/taskq/api/tasks", timeout=10)
    assert anonymous.status_code in (401, 403)
    forged = requests.get(f"http://127.0.0.1:{hub.service_port}/services/taskq/taskq/api/tasks",
                          headers={"Authorization": "token not-a-hub-token"}, timeout=10)
    assert forged.status_code in (401, 403)
    assert "Uncaught exception" not in hub.log_path.read_text(), "refused cleanly, without a server error"


def test_admins_and_the_admin_group_see_everyone(hub, users):
    for admin in (CAROL, DAVE):  # carol: a hub admin; dave: custom:taskq:admin, through his group's role
        listing = hub.service_client(admin).list(limit=100)
        assert {ALICE, BOB} <= {t["owner"] for t in listing["tasks"]}, admin
    carol = hub.service_client(CAROL)
    assert {t["owner"] for t in carol.session.get(carol.api + "tasks", params={"owner": BOB},
                                                  timeout=30).json()["tasks"]} == {BOB}, "an admin's 'Mine'"
    bob = users[BOB]
    assert {t["owner"] for t in bob.session.get(bob.api + "tasks", params={"owner": ALICE},
                                                timeout=30).json()["tasks"]} == {BOB}, "a user's are his own"
    stats = carol.stats()
    assert {ALICE, BOB} <= set(stats["users"]) and stats["you"]["sees_all"]
    assert "jupyter-taskq: could not" not in hub.log_path.read_text(), "the service read users' groups from the hub"


def test_queued_tasks_quota_refuses_with_a_message_naming_it(hub, users, gate):
    alice = users[ALICE]
    blocker = alice.submit(wait_for_file, (str(gate),), name="blocker")
    wait_for(lambda: alice.get(blocker.id)["status"] == "RUNNING", 60, 0.1, "the blocker to run")
    waiting = [alice.submit(add, (i, i)) for i in range(MAX_QUEUED)]
    with pytest.raises(TaskqError) as refused:
        alice.submit(add, (0, 0))
    assert refused.value.status_code == 429 and "max_queued_tasks" in str(refused.value)
    other = users[BOB].submit(add, (5, 5))  # bob's quota is his own
    gate.write_text("go")
    assert [h.result(timeout=120) for h in waiting] == [0, 2, 4, 6] and other.result(timeout=120) == 10


def started(client, handles) -> list[float]:
    from datetime import datetime

    return [datetime.fromisoformat(client.get(h.id)["started_at"].replace("Z", "+00:00")).timestamp()
            for h in handles]


def test_a_freed_gpu_goes_to_the_user_with_the_least_recent_gpu_time(hub, users, gate):
    dave, bob = hub.service_client(DAVE), users[BOB]
    blockers = [dave.submit(wait_for_file, (str(gate),), gpu=1, name="long") for _ in range(2)]
    wait_for(lambda: all(dave.get(h.id)["status"] == "RUNNING" for h in blockers), 60, 0.1, "dave on both GPUs")
    wait_for(lambda: dave.stats()["users"][DAVE]["gpu_seconds_today"] >= 2, 60, 0.1, "dave to use GPU time")
    daves = [dave.submit(add, (i, 0), gpu=1) for i in range(6)]
    bobs = [bob.submit(add, (i, 1), gpu=1) for i in range(2)]  # queued after all of dave's
    gate.write_text("go")
    assert [h.result(timeout=120) for h in daves + bobs] == [0, 1, 2, 3, 4, 5, 1, 2]
    assert max(started(bob, bobs)) <= min(started(dave, daves)), "both of bob's start before dave's next"


def test_a_user_at_the_gpu_quota_waits_while_another_user_runs(hub, users, gate):
    alice, bob = users[ALICE], users[BOB]  # alice: max_gpus 1 (quota_overrides)
    mine = [alice.submit(wait_for_file, (str(gate),), gpu=1) for _ in range(3)]
    wait_for(lambda: alice.list("RUNNING")["total"] == 1, 60, 0.1, "alice's first GPU task to run")
    other = bob.submit(wait_for_file, (str(gate),), gpu=1)
    wait_for(lambda: bob.get(other.id)["status"] == "RUNNING", 60, 0.1, "bob's task on the GPU alice may not take")
    assert alice.list("RUNNING")["total"] == 1 and alice.list("PENDING")["total"] == 2
    gate.write_text("go")
    assert [h.result(timeout=120) for h in mine + [other]] == ["opened"] * 4


def test_the_change_feed_and_task_groups_name_only_a_users_own_tasks(hub, users):
    alice, bob = users[ALICE], users[BOB]
    import threading

    seen, stop = set(), threading.Event()

    def follow():  # as the Lab panel does: long-poll from the last cursor, again and again
        cursor = bob.session.get(bob.api + "changes", timeout=30).json()["cursor"]
        while not stop.is_set():
            answer = bob.session.get(bob.api + "changes", params={"since": cursor, "wait": 2}, timeout=30).json()
            seen.update(answer["changed"] or ())  # null: "refetch everything" (a change no ring announced)
            cursor = answer["cursor"]

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    alices, bobs = [], []
    try:
        for _ in range(10):  # the feed may answer a change with null instead of its id: then try another
            alices.append(alice.submit(add, (3, 4)))
            bobs.append(bob.submit(add, (1, 2)))
            assert alices[-1].result(timeout=120) == 7 and bobs[-1].result(timeout=120) == 3
            if any(h.id in seen for h in bobs):
                break
    finally:
        stop.set()
        follower.join(10)
    assert any(h.id in seen for h in bobs), "bob's feed names his tasks"
    assert not seen & {h.id for h in alices}, "bob's feed never names alice's tasks"
    theirs, mine = alices[-1], bobs[-1]
    group = bob.session.post(bob.api + "groups", json={"task_ids": [theirs.id, mine.id]}, timeout=30).json()
    shown = bob.session.get(bob.api + f"groups/{group['id']}", timeout=30).json()
    assert [t["id"] for t in shown["tasks"] if t["status"] != "LOST"] == [mine.id]
    assert shown["counts"] == {"COMPLETE": 1, "MISSING": 1}
    alone = bob.session.post(bob.api + "groups", json={"task_ids": [theirs.id]}, timeout=30).json()
    assert bob.session.get(bob.api + f"groups/{alone['id']}", timeout=30).status_code == 404


def run_in_kernel(hub: Hub, user: str, token: str, code: str, timeout: float = 120) -> str:
    """Start a real kernel on the user's server (through the hub's proxy), run ``code``, return its stdout."""
    import asyncio
    import uuid as _uuid

    from tornado.websocket import websocket_connect

    base = f"{hub.url}user/{user}/api/kernels"
    headers = {"Authorization": f"token {token}"}
    session = requests.post(f"{hub.url}user/{user}/api/sessions", headers=headers, timeout=60, json={
        "path": "kernel-test.ipynb", "type": "notebook", "kernel": {"name": "python3"}}).json()  # as Lab opens one
    kernel = session["kernel"]

    async def execute() -> str:
        from tornado.httpclient import HTTPRequest

        ws = await websocket_connect(HTTPRequest(f"{base.replace('http', 'ws', 1)}/{kernel['id']}/channels",
                                                 headers=headers))
        msg_id = _uuid.uuid4().hex
        ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": user, "session": msg_id,
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "allow_stdin": False}}))
        out = []
        while True:
            message = json.loads(await ws.read_message())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["header"]["msg_type"]
            if kind == "stream":
                out.append(message["content"]["text"])
            elif kind == "error":
                out.append("\n".join(message["content"]["traceback"]))
            elif kind == "status" and message["content"]["execution_state"] == "idle":
                ws.close()
                return "".join(out)

    try:
        return run_coroutine(asyncio.wait_for(execute(), timeout))
    finally:
        requests.delete(f"{hub.url}user/{user}/api/sessions/{session['id']}", headers=headers, timeout=30)


KERNEL_CODE = """\
import json, os
from jupyter_taskq.notebook.client import Client
c = Client(os.environ['JUPYTER_TASKQ_URL'], os.environ['JUPYTER_TASKQ_TOKEN'])
def double(x):
    import os
    return 2 * x, os.getuid(), os.getcwd()
h = c.submit(double, (21,))
value, uid, cwd = h.result(timeout=60)
print(json.dumps({"value": value, "task_uid": uid, "task_cwd": cwd, "owner": c.get(h.id)["owner"],
                  "url": os.environ["JUPYTER_TASKQ_URL"], "kernel_uid": os.getuid()}))
"""


@pytest.mark.parametrize("user", [ALICE, BOB])
def test_a_kernel_submits_through_its_users_server_as_that_user(hub, users, accounts, user):
    out = run_in_kernel(hub, user, hub.token(user), KERNEL_CODE)
    try:
        seen = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        pytest.fail(f"the kernel printed no answer:\n{out}")
    account = accounts[user]
    assert seen["value"] == 42 and seen["owner"] == user, out
    assert f"/user/{user}/" in seen["url"], "the kernel talks to its own server, which forwards to the hub service"
    assert seen["kernel_uid"] == account.pw_uid, "the user's server and kernel run as their account"
    assert seen["task_uid"] == account.pw_uid != 0, "the task ran as its owner's account"
    assert seen["task_cwd"] == account.pw_dir, "in the notebook's working directory (the user's home)"


def test_each_task_runs_as_its_owners_account(hub, users, accounts):
    handles = {name: users[name].submit(who_am_i, name=f"who-{name}") for name in (ALICE, BOB)}
    handles[DAVE] = hub.service_client(DAVE).submit(who_am_i)  # straight to the service, with his hub token
    for name, handle in handles.items():
        account, seen = accounts[name], handle.result(timeout=120)
        assert seen["uid"] == seen["euid"] == account.pw_uid != 0, name
        assert seen["gid"] == account.pw_gid and seen["home"] == account.pw_dir and seen["user"] == name


FAN_OUT_CODE = """\
import json, os
from jupyter_taskq import task_queue
from jupyter_taskq.notebook.client import Client
c = Client(os.environ['JUPYTER_TASKQ_URL'], os.environ['JUPYTER_TASKQ_TOKEN'])
@task_queue()
def square(x):
    return x * x
def fan_out(values):
    handles = [square.put(v) for v in values]  # in the task: no arguments, as its owner (issue 19)
    return [h.result(timeout=120) for h in handles], [h.id for h in handles]
h = c.submit(fan_out, ([5, 6],), gpu=1)  # on a GPU worker: the one CPU worker runs the subtasks
results, ids = h.result(timeout=180)
print(json.dumps({"results": results, "ids": ids, "owners": [c.get(i)["owner"] for i in ids]}))
"""


def test_a_task_submits_tasks_as_its_hub_user(hub, users):
    out = run_in_kernel(hub, ALICE, hub.token(ALICE), FAN_OUT_CODE, timeout=240)
    try:
        seen = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        pytest.fail(f"the kernel printed no answer:\n{out}")
    assert seen["results"] == [25, 36] and seen["owners"] == [ALICE, ALICE], out
    with pytest.raises(TaskqError) as not_bobs:
        users[BOB].get(seen["ids"][0])
    assert not_bobs.value.status_code == 404


def test_a_task_from_a_folder_its_owner_cannot_enter_fails_saying_so(hub, users, tmp_path, monkeypatch):
    closed = tmp_path / "roots-only"  # under pytest's tmp_path: root's, mode 0700
    closed.mkdir()
    monkeypatch.chdir(closed)
    alice = users[ALICE]
    handle = alice.submit(who_am_i, max_retries=0)
    wait_for(lambda: alice.get(handle.id)["status"] == "FAILED", 120, 0.1, "the task to fail")
    message = alice.get(handle.id)["error"]["message"]
    assert str(closed) in message and "cannot be entered by the account this task runs as" in message, message


def save_report(text):
    import os

    import jupyter_taskq

    path = os.path.join(os.environ["HOME"], "report.txt")  # the owner's home: run as them, they may write there
    with open(path, "w") as f:
        f.write(text)
    return jupyter_taskq.Output(path).save()


def test_outputs_download_through_the_users_server_and_only_for_the_owner(hub, users, accounts, tmp_path):
    alice, bob = users[ALICE], users[BOB]
    handle = alice.submit(save_report, ("x" * 3_000_000,))
    assert handle.result(timeout=120) == "report.txt"
    owner = accounts[ALICE]
    written = Path(owner.pw_dir) / "report.txt"
    assert written.stat().st_uid == owner.pw_uid and written.stat().st_gid == owner.pw_gid, "the owner's file"
    kept = hub.state / "outputs" / handle.id / "1" / "files" / "report.txt"
    assert kept.stat().st_uid == owner.pw_uid, "the saved output is the owner's too"
    task = alice.get(handle.id)
    assert task["outputs"][0]["url"].startswith(f"/user/{ALICE}/taskq/api/tasks/"), "the user's own server's URL"
    saved = alice.download(handle.id, "report.txt", tmp_path / "mine")
    assert Path(saved).read_text() == "x" * 3_000_000, "streamed back through the forwarding server"
    ranged = alice.session.get(alice.url.rstrip("/") + task["outputs"][0]["url"].split(f"/user/{ALICE}", 1)[1],
                               headers={"Range": "bytes=10-19"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == b"x" * 10, "ranges pass through"
    with pytest.raises(TaskqError) as refused:
        bob.download(handle.id, "report.txt", tmp_path / "theirs")
    assert refused.value.status_code == 404


def shared_secret_call(client, shared, arg):
    """A batch of one task whose payload names the blob ``shared`` for its function (as map() sends)."""
    from jupyter_taskq import batchstream, blobs
    from jupyter_taskq.payload import calling_context

    frames = batchstream.frames([({"name": "shared"}, blobs.dumps_args(shared, (arg,), None, calling_context()))])
    return client.session.post(client.api + "tasks/batch", data=b"".join(frames),
                               headers={"Content-Type": batchstream.CONTENT_TYPE}, timeout=60)


def test_a_blob_is_its_uploaders_alone(hub, users):
    """Issue 25: bob can neither learn that alice uploaded a blob nor run her function, with the data it
    captured, in his task; uploading the same bytes himself makes them his too, in the one file."""
    import functools
    import operator

    from jupyter_taskq import blobs
    from jupyter_taskq.payload import calling_context

    alice, bob = users[ALICE], users[BOB]
    secret = functools.partial(operator.add, "alice's secret, read by ")
    shared = blobs.shared_part(secret, calling_context(), share_at=0)

    def head(client) -> int:
        return client.session.head(client.api + f"blobs/{shared.key}", timeout=30).status_code

    def put(client) -> int:
        return client.session.put(client.api + f"blobs/{shared.key}", data=shared.data, timeout=60,
                                  headers={"Content-Type": "application/octet-stream"}).status_code

    def files() -> list[Path]:
        return list((hub.state / "blobs").glob("*.blob"))

    assert put(alice) == 201 and head(alice) == 200
    assert head(bob) == 404, "someone else's blob reads as absent"
    assert head(hub.service_client(CAROL)) == 404, "an admin's blobs are what they uploaded too"
    before = bob.list()["total"]
    refused = shared_secret_call(bob, shared, "bob")
    assert refused.status_code == 409 and f"blobs/{shared.key}" in refused.json()["message"], refused.text
    assert bob.list()["total"] == before, "nothing was created"

    alices = shared_secret_call(alice, shared, "alice").json()["tasks"][0]["id"]
    assert alice.get(alices, wait=120)["status"] == "COMPLETE"
    assert alice.result(alices) == "alice's secret, read by alice"
    assert put(bob) == 201, "new to bob: he learns nothing of alice's upload"
    assert head(bob) == 200 and [p.name for p in files()] == [f"{shared.key}.blob"], "one file on disk"
    bobs = shared_secret_call(bob, shared, "bob").json()["tasks"][0]["id"]
    assert bob.get(bobs, wait=120)["status"] == "COMPLETE"

    alice.delete(alices)
    assert head(bob) == 200 and head(alice) == 200, "bob's task still names it; alice uploaded it"
    bob.delete(bobs)
    assert not files() and head(alice) == 404 and head(bob) == 404, "gone with the last task naming it"


def warm_pid():
    import os

    return os.getpid()


def test_warm_processes_are_their_owners_in_stats_and_drop(hub, users):
    """Issue 25: stats show each user their own warm processes (an admin all), and a user's DELETE warm
    ends only theirs."""
    alice, bob, carol = users[ALICE], users[BOB], hub.service_client(CAROL)

    def warm(client) -> list[dict]:
        return [w for worker in client.stats()["workers"] for w in worker["warm"]]

    alices_pid = alice.submit(warm_pid, keep_warm_seconds=300).result(timeout=120)
    bob.submit(warm_pid, keep_warm_seconds=300).result(timeout=120)
    wait_for(lambda: {w["owner"] for w in warm(carol)} == {ALICE, BOB}, 30, 0.2, "both warm processes in stats")
    assert {w["owner"] for w in warm(alice)} == {ALICE} and {w["owner"] for w in warm(bob)} == {BOB}

    dropped = bob.session.delete(bob.api + "warm", timeout=30)
    assert dropped.status_code == 200 and dropped.json()["workers_asked"] >= 1
    wait_for(lambda: not warm(bob), 30, 0.2, "bob's warm process to end")
    assert {w["owner"] for w in warm(carol)} == {ALICE}, "alice's stays"
    assert alice.submit(warm_pid, keep_warm_seconds=300).result(timeout=120) == alices_pid, "and serves her again"
    assert carol.session.delete(carol.api + "warm", timeout=30).status_code == 200
    wait_for(lambda: not warm(carol), 30, 0.2, "an admin's drop to end everyone's")
