"""W4 warm: 20 tasks in a row whose body imports scikit-learn and pandas, with and without keep_warm_seconds.

    python bench/bench_warm.py [--tasks 20] [--json PATH] [--tmpdir DIR]

Each task imports ``sklearn.ensemble`` and ``pandas`` and fits a tiny model, timing its own body
(imports included). The per-task overhead is what the caller waits (submit to result) minus that
body time. Without ``keep_warm_seconds`` every attempt runs in a fresh process and pays the imports;
with it, the worker's warm process has them after the first task. The same calls made in this
process (the kernel) are shown beside. One CPU worker, so all tasks meet the same warm process.
Target (issue 11): overhead < 30 ms per task after the first, with keep_warm_seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_engine import Taskq, log


def fit_small(seed):
    """Defined in __main__, so it travels by value, as a notebook's function does."""
    import time

    start = time.perf_counter()
    import pandas as pd
    import sklearn.ensemble

    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": [0, 1, 0, 1]})
    model = sklearn.ensemble.RandomForestClassifier(n_estimators=2, random_state=seed).fit(frame[["x"]], frame["y"])
    return time.perf_counter() - start, int(model.predict([[1.0]])[0])


def run(client, n: int, **options) -> list[tuple[float, float]]:
    """(wall seconds, body seconds) of ``n`` tasks in a row."""
    rows = []
    for i in range(n):
        start = time.perf_counter()
        body, _ = client.submit(fit_small, (i,), **options).result(timeout=300)
        rows.append((time.perf_counter() - start, body))
    return rows


def summary(rows: list[tuple[float, float]]) -> dict:
    overheads = [(wall - body) * 1000 for wall, body in rows[1:]]
    return {"first_wall_ms": rows[0][0] * 1000, "first_body_ms": rows[0][1] * 1000,
            "later_wall_ms_median": statistics.median(w * 1000 for w, _ in rows[1:]),
            "later_body_ms_median": statistics.median(b * 1000 for _, b in rows[1:]),
            "later_overhead_ms_median": statistics.median(overheads), "later_overhead_ms_max": max(overheads)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--json", default=None)
    parser.add_argument("--tmpdir", default=None)
    args = parser.parse_args()

    kernel = []
    for i in range(args.tasks):
        start = time.perf_counter()
        body, _ = fit_small(i)
        kernel.append((time.perf_counter() - start, body))
    results = {"kernel": summary(kernel)}
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        with Taskq(Path(tmp), cpu_workers=1) as engine:
            client = engine.client
            log("cold: no keep_warm_seconds")
            results["fresh process per task"] = summary(run(client, args.tasks))
            log("warm: keep_warm_seconds=300")
            results["keep_warm_seconds=300"] = summary(run(client, args.tasks, keep_warm_seconds=300))
    print(f"\nW4 warm: {args.tasks} tasks in a row importing sklearn.ensemble + pandas (1 CPU worker)\n")
    keys = list(next(iter(results.values())))
    print(f"{'':34}" + "".join(f"{name:>26}" for name in results))
    for key in keys:
        print(f"{key:34}" + "".join(f"{r[key]:26.1f}" for r in results.values()))
    verdict = results["keep_warm_seconds=300"]["later_overhead_ms_median"] < 30
    print(f"\ntarget: overhead after the first < 30 ms with keep_warm_seconds: {'PASS' if verdict else 'MISS'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
