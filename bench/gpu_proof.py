"""Proof on a real GPU (issue 26): a gpu=1 task sees exactly one device, and the right one.

    python bench/gpu_proof.py [--timeout 240]

Needs a machine with an NVIDIA GPU, its driver, and PyTorch with CUDA in this environment. Starts a
real Jupyter server with the extension (``TaskQueue.gpus = "auto"``: NVML or ``nvidia-smi``, no CPU
workers), submits one ``gpu=1`` task that imports torch, and asserts inside and outside the task:

* ``torch.cuda.device_count() == 1`` in the task;
* the task's ``CUDA_VISIBLE_DEVICES`` and ``jupyter_taskq.gpus()`` name one physical GPU of this machine;
* ``torch.cuda.get_device_name(0)`` is the name the driver reports for that physical GPU.

With two or more GPUs it also runs one ``gpu=2`` task and asserts ``device_count() == 2`` and that it
sees two distinct physical GPUs in order. Prints one JSON line; exits 1 on any failure. Takes well
under 5 minutes (most of it the server's start and torch's import).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import TOKEN, free_port, wait_for  # noqa: E402


def what_the_task_sees():
    """Runs on the worker: what CUDA shows this attempt."""
    import os

    import torch

    import jupyter_taskq

    count = torch.cuda.device_count()
    return {"device_count": count, "names": [torch.cuda.get_device_name(i) for i in range(count)],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "gpus": jupyter_taskq.gpus()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=240)
    args = parser.parse_args()
    import subprocess

    from jupyter_taskq.gpus import detect_gpu_names
    from jupyter_taskq.notebook.client import Client

    names = detect_gpu_names()
    if not names:
        print(json.dumps({"ok": False, "why": "no GPU detected (NVML / nvidia-smi)"}))
        return 1
    root = Path(tempfile.mkdtemp(prefix="taskq-gpu-proof-"))
    port = free_port()
    cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
           f"--TaskQueue.state_dir={root / 'state'}", "--TaskQueue.gpus=auto", "--TaskQueue.cpu_workers=0"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    server = subprocess.Popen(cmd, cwd=root, stdout=open(root / "server.log", "ab"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    report: dict = {"driver_names": {str(k): v for k, v in names.items()}}
    ok = True
    try:
        client = Client(f"http://127.0.0.1:{port}/", TOKEN)

        def ready():
            try:
                return sum(w["alive"] and w["pool"] == "gpu" for w in client.stats()["workers"]) >= len(names)
            except Exception:  # noqa: BLE001 - not up yet
                return False

        wait_for(ready, 90, "the GPU workers")
        deadline = time.monotonic() + args.timeout
        one = client.submit(what_the_task_sees, gpu=1, timeout=120).result(timeout=max(1, deadline - time.monotonic()))
        report["gpu1"] = one
        physical = one["gpus"]
        ok &= one["device_count"] == 1
        ok &= len(physical) == 1 and one["cuda_visible_devices"] == str(physical[0]) and physical[0] in names
        ok &= bool(physical) and one["names"] == [names.get(physical[0])]
        if len(names) >= 2:
            two = client.submit(what_the_task_sees, gpu=2, timeout=120).result(
                timeout=max(1, deadline - time.monotonic()))
            report["gpu2"] = two
            ok &= two["device_count"] == 2 and len(set(two["gpus"])) == 2 and two["gpus"] == sorted(two["gpus"])
            ok &= two["names"] == [names.get(g) for g in two["gpus"]]
    except Exception as exc:  # noqa: BLE001 - report it, fail
        report["error"] = f"{type(exc).__name__}: {exc}"
        ok = False
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    report["ok"] = bool(ok)
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
