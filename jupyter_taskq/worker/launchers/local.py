"""The local launcher: today's behaviour, one worker supervisor (``jupyter taskq worker``) on this machine.

It runs as the server's child and is restarted if it dies; the supervisor itself starts one worker per
GPU slot plus the CPU workers (:mod:`jupyter_taskq.worker.supervisor`).
"""

from __future__ import annotations

import os
import subprocess
import sys

from ... import tasktokens
from .base import Launcher


class LocalLauncher(Launcher):
    kind = "local"

    def __init__(self, gpus: list[int] | None = None, cpu_workers: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.gpus = list(self.app.device_list if gpus is None else gpus)
        self.cpu_workers = self.app.cpu_workers if cpu_workers is None else cpu_workers
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        app = self.app
        model = ["--gpu-model", app.gpu_model] if app.gpu_model else []
        # "--name" "": this server's own workers keep plain names (cpu0, gpu1); joining machines prefix theirs.
        cmd = [sys.executable, "-m", "jupyter_taskq.worker", *app.backend.child_args(), "--name", "",
               "--gpus", ",".join(map(str, self.gpus)), *model,
               "--config", self.worker_config(cpu_workers=self.cpu_workers).to_json(), "--die-with-parent",
               "--image-dir", str(app.service.image_dir), "--image-cache-bytes", str(app.image_cache_bytes)]
        if app.backend.allow_volatile:  # redis_allow_volatile (only a Redis worker reads it)
            cmd.append("--redis-allow-volatile")  # the server took a Redis without persistence; so do they
        return cmd

    def start(self) -> None:
        env = dict(os.environ, **self.app.backend.child_env())
        # Where tasks reach the queue with their task token (tasktokens.py); the port is bound by now.
        env[tasktokens.SERVER_URL_ENV] = os.environ.get(tasktokens.SERVER_URL_ENV) or self.app.serverapp.connection_url
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, env=env)
        self.log.info("jupyter-taskq: worker supervisor started (pid %d)", self.proc.pid)

    def tick(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.log.warning("jupyter-taskq: worker supervisor exited (%s); restarting", self.proc.returncode)
            self.start()

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(self.app.kill_grace + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def jobs(self) -> list[dict]:
        if self.proc is None:
            return []
        return [{"id": str(self.proc.pid), "state": "running" if self.proc.poll() is None else "ended",
                 "node": None, "gpus": self.gpus}]
