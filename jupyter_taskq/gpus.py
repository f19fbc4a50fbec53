"""Which GPUs a machine has: NVML when importable, else ``nvidia-smi``, else none."""

from __future__ import annotations

import shutil
import subprocess


def detect_gpus() -> list[int]:
    return sorted(detect_gpu_names())


def detect_gpu_names() -> dict[int, str]:
    """Each GPU's model name as the driver reports it ("NVIDIA A100-SXM4-80GB"); {} when unknown."""
    try:
        import pynvml  # nvidia-ml-py, optional

        pynvml.nvmlInit()
        try:
            names = {}
            for index in range(pynvml.nvmlDeviceGetCount()):
                name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(index))
                names[index] = name.decode() if isinstance(name, bytes) else name
            return names
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {}
    try:
        out = subprocess.run([smi, "--query-gpu=index,name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    names = {}
    for line in out.splitlines():
        number, _, name = line.partition(",")
        if number.strip().isdigit() and name.strip():
            names[int(number)] = name.strip()
    return names


def gpu_models(gpus: list[int], model: str | None = None) -> dict[int, str]:
    """Model name of each of ``gpus``: ``model`` for all when given, else what the driver reports."""
    if model:
        return {gpu: model for gpu in gpus}
    return {gpu: name for gpu, name in detect_gpu_names().items() if gpu in gpus} if gpus else {}


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
