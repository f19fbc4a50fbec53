"""The raw-Huey baseline's queue and task, importable by ``huey_consumer``.

Huey finds tasks by module path, so the consumer subprocess and the benchmark
must import the same module; the SQLite file comes from ``$BENCH_HUEY_DB``.
"""

import os

from huey import SqliteHuey

huey = SqliteHuey("bench", filename=os.environ.get("BENCH_HUEY_DB", "bench-huey.db"))


@huey.task()
def echo(x):
    return x
