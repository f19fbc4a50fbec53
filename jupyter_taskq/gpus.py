"""Which GPUs a machine has: NVML when importable, else ``nvidia-smi``, else none."""

from __future__ import annotations

import shutil
import subprocess


def detect_gpus() -> list[int]:
    try:
        import pynvml  # nvidia-ml-py, optional

        pynvml.nvmlInit()
        try:
            return list(range(pynvml.nvmlDeviceGetCount()))
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(line) for line in out.split() if line.strip().isdigit()]


def parse_gpus(value) -> list[int]:
    """``"auto"``, ``"0,1"``, ``[0, 1]``, ``""`` or ``[]`` -> device indices."""
    if value in (None, "auto"):
        return detect_gpus()
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    devices = [int(v) for v in value]
    if any(d < 0 for d in devices) or len(set(devices)) != len(devices):
        raise ValueError(f"GPU list must hold distinct non-negative indices, got {value!r}")
    return devices
