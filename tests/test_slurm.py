"""The Slurm launcher against a real one-node Slurm cluster (tests/slurm_kit.py: 2 generic GPUs).

Workers are batch jobs: submitted while GPU tasks wait (never more than max_jobs), pinned to the GPU
Slurm gave the job, ended after idle_timeout, replaced when Slurm ends one mid-task (the task is
requeued and resumes from its checkpoint), cancelled when the server stops; a job Slurm cannot run fails
its tasks with Slurm's reason; a configuration that cannot work is refused at start with one line.
"""

from __future__ import annotations

import time

import pytest
import requests

from conftest import TOKEN, TaskqServer, wait_for
from slurm_kit import slurm  # noqa: F401 - the module's cluster fixture

pytestmark = pytest.mark.slow


def start(tmp_path, name="server", start_workers=True, **launcher) -> TaskqServer:
    """A Redis-backed server whose workers are Slurm jobs, configured like a user's config file."""
    root = tmp_path / name
    root.mkdir()
    settings = {"max_jobs": 2, "idle_timeout": 8, "gpus_per_job": 1, "poll_interval": 0.5,
                "signal_seconds": 0, **launcher}
    config = root / "taskq_config.py"
    config.write_text("c.TaskQueue.launcher_class = 'slurm'\n"
                      + "".join(f"c.SlurmLauncher.{k} = {v!r}\n" for k, v in settings.items()))
    server = TaskqServer(root, gpus=[], cpu_workers=0, backend="redis", heartbeat_timeout=3,
                         extra_args=[f"--config={config}"], start_workers=start_workers)
    return server.start(wait_workers=False)


def gpu_probe():
    def probe(n, ledger, seconds):
        import os
        import time

        time.sleep(seconds)
        seen = (os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("SLURM_JOB_GPUS"), os.environ.get("SLURM_JOB_ID"))
        with open(ledger, "a") as f:
            f.write(f"{n} {seen[2]}\n")
        return seen

    return probe


def test_jobs_grow_with_the_queue_pin_gpus_run_each_task_once_and_end_idle(slurm, tmp_path):
    server = start(tmp_path)
    try:
        client = server.client()
        wait_for(lambda: client.stats()["launcher"]["kind"] == "slurm", 20, 0.1, "the Slurm launcher")
        time.sleep(0)  # the launcher polls every 0.5 s: with the queue empty, two polls submit nothing
        wait_for(lambda: client.stats()["launcher"]["jobs"] == [] and not slurm.jobs(), 5, 0.5, "no job")
        ledger = tmp_path / "ledger.txt"
        probe = gpu_probe()
        handles = [client.submit(probe, (n, str(ledger), 1.0), gpu=1, max_retries=2) for n in range(10)]
        most = 0
        pending_note = None

        def done() -> bool:
            nonlocal most, pending_note
            most = max(most, len(slurm.jobs()))
            for task in client.tasks_by_id([h.id for h in handles]):
                pending_note = pending_note or task.get("waiting_for")
            return all(t["status"] in ("COMPLETE", "FAILED") for t in client.tasks_by_id([h.id for h in handles]))

        wait_for(done, 180, 0.2, "10 GPU tasks on Slurm jobs")
        assert 1 <= most <= 2, f"{most} jobs ran at once; max_jobs is 2"
        assert pending_note and pending_note.startswith("waiting for Slurm job"), pending_note
        jobs_seen = set()
        for n, handle in enumerate(handles):
            assert handle.status() == "COMPLETE", handle.info()
            cuda, job_gpus, job_id = handle.result()
            assert cuda == job_gpus and cuda in ("0", "1"), (cuda, job_gpus)  # the GPU Slurm gave that job
            jobs_seen.add(job_id)
        ran = [int(line.split()[0]) for line in ledger.read_text().splitlines()]
        assert sorted(ran) == list(range(10)), "each task ran exactly once"
        assert 1 <= len(jobs_seen)
        stats = client.stats()["launcher"]
        assert all(j["id"] and j["state"] in ("pending", "running", "ending") for j in stats["jobs"])
        # Idle for idle_timeout (8 s): the jobs end themselves.
        wait_for(lambda: not slurm.jobs(), 60, 0.5, "the idle jobs to end")
        wait_for(lambda: client.stats()["launcher"]["jobs"] == [], 10, 0.2, "stats without jobs")
    finally:
        server.close()
    assert not slurm.jobs()
