"""image=: the cold build of Image(python_packages=["scikit-learn"]) and the warm start, beside uv by hand.

    python bench/bench_images.py [--package scikit-learn] [--fresh-uv-cache]

Four numbers, each in a fresh temporary image_dir:
* by hand: ``uv venv`` + ``uv pip install PACKAGE`` (the floor: what the image build wraps);
* cold build: ``worker.images.prepare`` of the spec (interpreter lookup, pip-config translation, venv,
  install with the runner's cloudpickle and dill, freeze, size);
* warm prepare: the same spec again (lock, record read: what a second task pays before its process);
* warm start: exec of the image's interpreter on an empty script (what a task in an image pays beside
  a forked task process).
uv's cache is the machine's (UV_CACHE_DIR) unless --fresh-uv-cache: then all three start from nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jupyter_taskq.image import Image, for_kernel  # noqa: E402
from jupyter_taskq.worker import images  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--package", default="scikit-learn")
    parser.add_argument("--fresh-uv-cache", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.fresh_uv_cache:
            os.environ["UV_CACHE_DIR"] = str(tmp / "uv-cache")
        else:
            os.environ.setdefault("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv"))
        env = images.uv_env(tmp, False)
        uv = images.uv_bin()
        start = time.monotonic()
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(tmp / "hand")], env=env, check=True)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(tmp / "hand" / "bin" / "python"), args.package],
                       env=env, check=True)
        by_hand = time.monotonic() - start
        spec = for_kernel(Image(python_packages=[args.package]))
        start = time.monotonic()
        lease = images.prepare(spec, tmp / "images", lambda text: None)
        cold = time.monotonic() - start
        lease.release()
        start = time.monotonic()
        lease = images.prepare(spec, tmp / "images", lambda text: None)
        warm = time.monotonic() - start
        start = time.monotonic()
        subprocess.run([lease.python, "-c", "import cloudpickle, dill"], check=True)
        started = time.monotonic() - start
        lease.release()
        print(f"{args.package}: by hand (uv venv + uv pip install) {by_hand:.2f} s | cold image build {cold:.2f} s | "
              f"warm prepare {warm * 1000:.1f} ms | image interpreter start with the runner's imports "
              f"{started * 1000:.0f} ms | image {lease.environment['hash'][:12]}, "
              f"{len(lease.environment['packages'])} packages")


if __name__ == "__main__":
    main()
