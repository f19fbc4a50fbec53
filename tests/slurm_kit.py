"""A real one-node Slurm cluster for tests: munged, slurmctld and slurmd started as children, with a node
that offers two generic GPUs (character devices made with mknod), stopped by pid at the end.

The recipe is /work/shared/TOOLCHAIN.md's (Slurm 22.05, Debian's packages). Needs root (slurmd runs jobs
as their user; mknod) and ``apt-get install slurmctld slurmd slurm-client munge``: the tests skip,
saying so, without them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_port, wait_for


def missing() -> str | None:
    """Why no cluster can be started here, or None."""
    for tool in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo"):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install -y slurmctld slurmd slurm-client munge)"
    if os.geteuid() != 0:
        return "a test Slurm cluster needs root (slurmd, mknod)"
    return None


class SlurmCluster:
    def __init__(self, cpus: int = 8):
        # Not under pytest's tmp (0700 parents): munged and slurmd check the folders above their files.
        self.root = Path(tempfile.mkdtemp(prefix="taskq-slurm-"))
        os.chmod(self.root, 0o755)
        self.cpus = cpus
        self.procs: list[subprocess.Popen] = []
        self.conf = self.root / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def start(self) -> "SlurmCluster":
        root = self.root
        for folder in ("munge", "state", "spool", "dev"):
            (root / folder).mkdir(mode=0o755)
        os.chmod(root / "munge", 0o711)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        self.socket = root / "munge" / "munge.socket"
        for n in range(2):
            os.mknod(root / "dev" / f"nvidia{n}", 0o600 | 0o020000, os.makedev(195, n))
        (root / "gres.conf").write_text("AutoDetect=off\n" + "".join(
            f"Name=gpu File={root}/dev/nvidia{n}\n" for n in range(2)))
        self.conf.write_text(f"""\
ClusterName=taskqtest
SlurmctldHost=localhost
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SlurmdParameters=config_overrides
KillWait=5
MinJobAge=300
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
InactiveLimit=0
OverTimeLimit=0
NodeName=localhost CPUs={self.cpus} Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
        self._spawn(["munged", "-F", "-f", f"--socket={self.socket}", f"--key-file={key}",
                     f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/munge/munged.log",
                     f"--seed-file={root}/munge/munged.seed"])
        wait_for(self.socket.exists, 20, 0.05, "munged's socket")
        self._spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld.out")
        self._spawn(["slurmd", "-D", "-N", "localhost", "-f", str(self.conf)], "slurmd.out")
        wait_for(lambda: self._node_state().startswith("idle"), 60, 0.25, f"the Slurm node to be idle ({self.log_tail()})")
        return self

    def _spawn(self, cmd: list[str], log: str | None = None) -> None:
        out = open(self.root / (log or f"{cmd[0]}.out"), "ab")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True))

    def _node_state(self) -> str:
        for proc in self.procs:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args[0]} exited with {proc.returncode}: {self.log_tail()}")
        out = self.run("sinfo", "-h", "-N", "-o", "%t", check=False)
        return out.stdout.strip()

    def log_tail(self) -> str:
        text = ""
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out", "munged.out"):
            path = self.root / name
            if path.exists():
                text += f"\n--- {name}\n" + path.read_text(errors="replace")[-1500:]
        return text

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30, check=check)

    def jobs(self, prefix: str = "taskq-") -> list[dict]:
        """This cluster's jobs not yet ended (squeue's default states), whose name begins with ``prefix``."""
        out = self.run("squeue", "-h", "-o", "%i|%j|%T|%r|%N")
        jobs = []
        for line in out.stdout.splitlines():
            job_id, name, state, reason, node = line.split("|")
            if name.startswith(prefix):
                jobs.append({"id": job_id, "name": name, "state": state, "reason": reason, "node": node})
        return jobs

    def stop(self) -> None:
        if self.conf.exists():
            self.run("scancel", "-u", "root", check=False)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        # A job's processes (linuxproc tracking) may outlive slurmd by a moment: they die with their job.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _job_processes():
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)


def _job_processes() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if b"slurmstepd" in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def slurm():
    why = missing()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster()
    try:
        cluster.start()
    except BaseException:
        print(cluster.log_tail())
        cluster.stop()
        raise
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # the servers the tests start run sbatch against it
    yield cluster
    if saved is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = saved
    cluster.stop()
