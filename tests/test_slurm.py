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


def start(tmp_path, name="server", start_workers=True, refused=False, **launcher) -> TaskqServer:
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
    if refused:  # up, answering 503 with the reason
        server._answers = lambda: _status(server) in (200, 503)
    return server.start(wait_workers=False)


def _status(server: TaskqServer) -> int | None:
    if server.proc.poll() is not None:
        raise AssertionError(f"server exited: {server.log_path.read_text()[-3000:]}")
    try:
        return requests.get(server.url + "taskq/api/stats", headers={"Authorization": f"token {TOKEN}"},
                            timeout=1).status_code
    except requests.RequestException:
        return None


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
                pending_note = pending_note or task.get("waiting_note")
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


def sleeper():
    def sleep_then_say(seconds):
        import os
        import time

        time.sleep(seconds)
        return os.environ.get("SLURM_JOB_ID")

    return sleep_then_say


def test_scancel_of_a_busy_job_requeues_its_task_on_another_job(slurm, tmp_path):
    server = start(tmp_path)
    try:
        client = server.client()
        handle = client.submit(sleeper(), (15,), gpu=1, max_retries=2)
        wait_for(lambda: handle.status() == "RUNNING", 90, 0.2, "the task running on a Slurm job")
        first = [j["id"] for j in slurm.jobs() if j["state"] == "RUNNING"]
        assert len(first) == 1
        slurm.run("scancel", first[0])
        assert handle.wait(timeout=150) == "COMPLETE", handle.info()
        assert handle.info()["attempt"] >= 2
        assert handle.result() != first[0], "the second attempt ran on a new job"
    finally:
        server.close()
    wait_for(lambda: not slurm.jobs(), 30, 0.5, "no job left after the server stopped")


def test_stopping_the_server_cancels_its_jobs(slurm, tmp_path):
    server = start(tmp_path)
    try:
        client = server.client()
        handle = client.submit(sleeper(), (120,), gpu=1)
        wait_for(lambda: handle.status() == "RUNNING", 90, 0.2, "the task running on a Slurm job")
        assert slurm.jobs()
        wait_for(lambda: client.stats()["launcher"]["jobs"][0]["workers"], 10, 0.2, "the job's worker in stats")
        job = client.stats()["launcher"]["jobs"][0]
        assert job["state"] == "running" and job["node"] == "localhost" and job["gpus"] in (["0"], ["1"]), job
        assert job["time_left"] > 3000
    finally:
        server.stop()
    wait_for(lambda: not slurm.jobs(), 30, 0.5, "no job left after the server stopped")
    server.close()


def test_a_job_slurm_cannot_run_fails_its_task_with_slurms_reason(slurm, tmp_path):
    server = start(tmp_path, gpus_per_job=3)  # the node has 2
    try:
        client = server.client()
        handle = client.submit(sleeper(), (0,), gpu=1)
        assert handle.wait(timeout=30) == "FAILED"
        assert "Requested node configuration is not available" in handle.info()["error"]["message"]
        assert not slurm.jobs()
    finally:
        server.close()


def test_bad_configuration_is_refused_at_start_with_one_line(slurm, tmp_path):
    for settings, says in (({"partition": "nosuch"}, "no partition 'nosuch'"),
                           ({"sbatch": "/nonexistent/sbatch"}, "/nonexistent/sbatch` is not on PATH")):
        server = start(tmp_path, name=f"s{len(says)}", refused=True, **settings)
        try:
            answer = requests.get(server.url + "taskq/api/stats", headers={"Authorization": f"token {TOKEN}"})
            assert answer.status_code == 503
            assert says in answer.json()["message"], answer.json()
        finally:
            server.close()


def trainer():
    def train(epochs, seconds):
        import os
        import time

        import jupyter_taskq

        state = jupyter_taskq.last_checkpoint({"epoch": 0, "jobs": [], "resumed_at": []})
        state["resumed_at"].append(state["epoch"])
        state["jobs"].append(os.environ.get("SLURM_JOB_ID"))
        while state["epoch"] < epochs:
            time.sleep(seconds)  # one epoch of training
            state["epoch"] += 1
            jupyter_taskq.checkpoint(state)
        return state

    return train


def test_a_job_that_reaches_its_time_limit_hands_the_task_to_a_new_job_which_resumes(slurm, tmp_path):
    # A one-minute limit (Slurm ends the job between 60 and 90 s: it checks limits every 30 s).
    server = start(tmp_path, time_limit="00:01:00", max_jobs=1)
    try:
        client = server.client()
        handle = client.submit(trainer(), (20, 5), gpu=1, max_retries=3)
        assert handle.wait(timeout=400) == "COMPLETE", handle.info()
        state = handle.result()
        assert state["epoch"] == 20
        assert len(set(state["jobs"])) >= 2, state
        assert state["resumed_at"][0] == 0 and state["resumed_at"][1] > 0, state  # not from zero
        assert handle.info()["attempt"] >= 2
    finally:
        server.close()
    wait_for(lambda: not slurm.jobs(), 30, 0.5, "no job left")


def test_a_gpu_2_task_gets_one_job_holding_both_gpus(slurm, tmp_path):
    """A gang (gpu=2) is not split across jobs of gpus_per_job=1: its job asks Slurm for both GPUs
    (--gres=gpu:2) and the task sees exactly those two devices."""
    server = start(tmp_path)  # gpus_per_job=1
    try:
        client = server.client()
        handle = client.submit(gpu_probe(), (0, str(tmp_path / "ledger.txt"), 0.5), gpu=2, max_retries=1)
        assert handle.wait(timeout=150) == "COMPLETE", handle.info()
        cuda, job_gpus, _job = handle.result()
        assert sorted(cuda.split(",")) == ["0", "1"], (cuda, job_gpus)
    finally:
        server.close()
    wait_for(lambda: not slurm.jobs(), 30, 0.5, "no job left after the server stopped")


def waits_for_the_warning():
    def wait_for_warning(started, seconds):
        import os
        import time

        import jupyter_taskq

        before = jupyter_taskq.checkpoint_requested()
        with open(started, "w") as f:  # the test signals the job only once the task is polling
            f.write("polling")
        deadline = time.monotonic() + seconds
        while not jupyter_taskq.checkpoint_requested():
            if time.monotonic() > deadline:
                return {"before": before, "requested": False}
            time.sleep(0.05)
        jupyter_taskq.checkpoint({"saved": True})  # saving answers the request
        return {"before": before, "requested": True, "after_checkpoint": jupyter_taskq.checkpoint_requested(),
                "job": os.environ.get("SLURM_JOB_ID")}

    return wait_for_warning


def test_slurms_warning_signal_asks_the_running_task_to_checkpoint(slurm, tmp_path):
    """Slurm's --signal=B:USR1@N warning (sent here at once with scancel --signal=USR1 --batch, as Slurm
    sends it N seconds before the limit) turns jupyter_taskq.checkpoint_requested() True in the task."""
    server = start(tmp_path, signal_seconds=120, max_jobs=1)
    try:
        client = server.client()
        started = tmp_path / "started"
        handle = client.submit(waits_for_the_warning(), (str(started), 45), gpu=1, max_retries=0)
        wait_for(started.exists, 90, 0.2, "the task running on a Slurm job, polling checkpoint_requested()")
        assert handle.status() == "RUNNING"
        job = [j["id"] for j in slurm.jobs() if j["state"] == "RUNNING"]
        assert len(job) == 1
        script = slurm.run("scontrol", "write", "batch_script", job[0], "-").stdout
        assert "#SBATCH --signal=B:USR1@120" in script, script
        slurm.run("scancel", "--signal=USR1", "--batch", job[0])
        assert handle.wait(timeout=50) == "COMPLETE", handle.info()
        result = handle.result()
        assert result["before"] is False and result["requested"] is True, result
        assert result["after_checkpoint"] is False, "checkpoint() answers the request"
        assert result["job"] == job[0]
        assert handle.info()["attempt"] == 1, "the warning does not end the task"
    finally:
        server.close()
    wait_for(lambda: not slurm.jobs(), 30, 0.5, "no job left after the server stopped")
