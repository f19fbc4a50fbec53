"""Engine benchmark: jupyter-taskq beside raw Huey and a fork Pool, on this machine, in one run.

    python bench/bench_engine.py [--quick] [--json PATH] [--engines taskq,huey,pool]

Every engine runs alone (one after the other) with two CPU workers:

- taskq: a real ``jupyter server`` with the extension (gpus=[], cpu_workers=2), driven through
  :class:`jupyter_taskq.notebook.client.Client`, as a notebook would.
- huey: ``SqliteHuey`` with its stock consumer (``-w 2 -k process``, default polling) and
  blocking ``Result.get``: what the queue underneath gives without our doorbells.
- pool: ``multiprocessing`` fork ``Pool(2)``: no HTTP, no disk, the floor.

Workloads: W1 submit-to-result latency of a trivial task (sequential), W2 throughput of
many trivial tasks, W3 a 100 MB argument round trip, and the CPU an idle engine burns.
Targets apply to taskq only; they live here, not in the tests, because speed depends on
the machine. Everything started here runs in temporary directories and is killed on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BENCH_DIR = Path(__file__).resolve().parent
TOKEN = "taskq-bench-token"
TIMEOUT = 180.0  # per blocking call: a hung engine fails the run instead of hanging it
BIG = 100 * 1000 * 1000  # W3 argument size in bytes

FULL = dict(warmup=20, latency=200, throughput=2000, big_reps=3, idle=10.0)
QUICK = dict(warmup=5, latency=50, throughput=300, big_reps=1, idle=3.0)

# metric: (label, comparison, target) -- targets are for jupyter-taskq.
METRICS = {
    "w1_p50_ms": ("W1 latency p50 (ms)", "<", 10.0),
    "w1_p99_ms": ("W1 latency p99 (ms)", "<", 30.0),
    "w2_tasks_per_s": ("W2 throughput (tasks/s)", ">", 600.0),
    "w3_seconds": ("W3 100 MB round trip (s)", "<", 1.0),
    "idle_cpu_pct": ("idle CPU (% of a core)", "<", 1.0),
}
#: Printed beside the targets, for explaining them; no target of their own.
INFO = {"w2_cpu_ms_per_task": "W2 CPU per task (ms, all processes)",
        "w2_faults_per_task": "W2 page faults per task (engine)"}


def echo(x):
    """The trivial task. Defined in __main__, so dill sends it by value, like a notebook's function."""
    return x


# -- processes ----------------------------------------------------------------------------
def process_tree(root_pids) -> list[psutil.Process]:
    procs = []
    for pid in root_pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
    return procs


def tree_cpu_percent(root_pids, seconds: float) -> tuple[float, dict[int, float]]:
    """CPU burnt by the processes under ``root_pids`` over ``seconds``, in % of one core,
    in total and by depth in the tree (a process born meanwhile counts all its time)."""
    before, start = _cpu_seconds(root_pids), time.monotonic()
    time.sleep(seconds)
    after, elapsed = _cpu_seconds(root_pids), time.monotonic() - start
    by_depth: dict[int, float] = {}
    for key, (depth, cpu) in after.items():
        used = cpu - before.get(key, (depth, 0.0))[1]
        by_depth[depth] = by_depth.get(depth, 0.0) + 100 * used / elapsed
    return sum(by_depth.values()), dict(sorted(by_depth.items()))


def _cpu_seconds(root_pids) -> dict[tuple[int, float], tuple[int, float]]:
    """(pid, create time) -> (depth below its root, CPU seconds of it and of its reaped children:
    task processes are short-lived, their time shows up in their worker's)."""
    out = {}

    def walk(proc: psutil.Process, depth: int) -> None:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            out[(proc.pid, proc.create_time())] = (depth, t.user + t.system + t.children_user + t.children_system)
            for child in proc.children():
                walk(child, depth + 1)

    for pid in root_pids:
        with contextlib.suppress(psutil.Error):
            walk(psutil.Process(pid), 0)
    return out


def total_page_faults(root_pids) -> int:
    """Minor page faults of the processes under ``root_pids`` and of their reaped children (Linux
    ``/proc/<pid>/stat`` minflt + cminflt): a fresh task process per attempt is mostly its fork's
    copy-on-write faults, reaped by its keeper, so they show here."""
    total = 0
    for proc in process_tree(root_pids):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[7]) + int(fields[8])  # minflt, cminflt (fields 10 and 11 of proc(5))
    return total


def total_cpu_seconds(root_pids) -> float:
    """CPU of the engine's processes plus this one (the client): with 2 cores, what a task costs
    in CPU bounds throughput more robustly than wall time on a noisy machine."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime + sum(cpu for _, cpu in _cpu_seconds(root_pids).values())


def stop_session(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 20.0) -> None:
    """Ask ``proc`` to stop, then SIGKILL its process group and any descendant still alive
    (task children put themselves in process groups of their own)."""
    if proc is None:
        return
    tree = process_tree([proc.pid])[1:]
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    for child in tree:  # psutil refuses to signal a pid that was reused meanwhile
        with contextlib.suppress(psutil.Error):
            child.kill()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- engines ------------------------------------------------------------------------------
class Taskq:
    """A real Jupyter server with the extension, driven through the REST client."""

    name = "jupyter-taskq"
    tiers = ("server", "supervisor", "workers", "task children")

    redis = False

    def __init__(self, tmp: Path, cpu_workers: int = 2):
        self.root, self.cpu_workers, self.port = tmp, cpu_workers, free_port()
        self.proc: subprocess.Popen | None = None
        self.redis_proc: subprocess.Popen | None = None

    def _start_redis(self) -> str:
        import redis

        port = free_port()
        self.redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root)], stdout=subprocess.DEVNULL, start_new_session=True)
        url = f"redis://127.0.0.1:{port}/0"
        conn = redis.Redis.from_url(url)

        def answers():
            try:
                return conn.ping()
            except redis.ConnectionError:
                return False

        wait_for(answers, 20, "redis-server")
        return url

    def __enter__(self):
        from jupyter_taskq.notebook.client import Client

        extra = [f"--TaskQueue.redis_url={self._start_redis()}"] if self.redis else []
        args = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={self.root}",
                f"--TaskQueue.state_dir={self.root / 'state'}", "--TaskQueue.gpus=[]",
                f"--TaskQueue.cpu_workers={self.cpu_workers}", *extra] + (["--allow-root"] if os.geteuid() == 0 else [])
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(self.root / "runtime"))
        self.log = self.root / "server.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.client = Client(f"http://127.0.0.1:{self.port}/", TOKEN, reconnect_for=0)  # polled while it starts: fail fast
        wait_for(self._workers_alive, 90, f"the taskq server and {self.cpu_workers} workers (log: {self.log})")
        return self

    def _workers_alive(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"jupyter server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
        try:
            return sum(w["alive"] for w in self.client.stats()["workers"]) >= self.cpu_workers
        except Exception:  # noqa: BLE001 - not answering yet
            return False

    def __exit__(self, *exc):
        stop_session(self.proc)
        if self.redis_proc is not None:
            stop_session(self.redis_proc)

    def pids(self) -> list[int]:
        return [self.proc.pid] + ([self.redis_proc.pid] if self.redis_proc else [])

    def call(self, x):
        return self.client.submit(echo, (x,)).result(timeout=TIMEOUT)

    def run_many(self, n: int) -> None:
        """As a notebook does it: ``task_queue(f).map(range(n)).results()`` (every result fetched)."""
        from jupyter_taskq.notebook import client as client_module
        from jupyter_taskq.notebook.decorator import task_queue

        client_module.connect(f"http://127.0.0.1:{self.port}/", TOKEN)  # the default client: this server
        self.values = task_queue(echo).map(range(n)).results(timeout=TIMEOUT)

    def check_many(self, n: int) -> None:
        assert self.values == list(range(n))


class RawHuey:
    """SqliteHuey with its stock consumer as a subprocess; results fetched with blocking ``get``."""

    name = "raw huey"
    tiers = ("consumer", "workers")

    def __init__(self, tmp: Path, workers: int = 2):
        self.root, self.workers = tmp, workers
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        os.environ["BENCH_HUEY_DB"] = str(self.root / "huey.db")  # read when huey_app is imported
        sys.path.insert(0, str(BENCH_DIR))
        import huey_app

        self.app = huey_app
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(BENCH_DIR), os.environ.get("PYTHONPATH", "")]))
        self.log = self.root / "consumer.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "huey.bin.huey_consumer", "huey_app.huey", "-w", str(self.workers),
                 "-k", "process"], cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: len(process_tree([self.proc.pid])) > self.workers, 30, "the huey consumer's workers")
        return self

    def __exit__(self, *exc):
        stop_session(self.proc, signal.SIGINT)  # SIGINT: huey's graceful shutdown

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def call(self, x):
        return self.app.echo(x).get(blocking=True, timeout=TIMEOUT)

    def run_many(self, n: int) -> None:
        results = [self.app.echo(i) for i in range(n)]
        self.last = [r.get(blocking=True, timeout=TIMEOUT) for r in results][-1]

    def check_many(self, n: int) -> None:
        assert self.last == n - 1


class ForkPool:
    """``multiprocessing`` fork Pool: no HTTP, no SQLite, no files -- the floor."""

    name = "mp Pool(2)"
    tiers = ("workers",)

    def __init__(self, tmp: Path, workers: int = 2):
        self.workers = workers

    def __enter__(self):
        self.pool = multiprocessing.get_context("fork").Pool(self.workers)
        return self

    def __exit__(self, *exc):
        self.pool.terminate()
        self.pool.join()

    def pids(self) -> list[int]:
        return [p.pid for p in self.pool._pool]

    def call(self, x):
        return self.pool.apply_async(echo, (x,)).get(TIMEOUT)

    def run_many(self, n: int) -> None:  # one message per task, as the queues do
        results = [self.pool.apply_async(echo, (i,)) for i in range(n)]
        self.last = [r.get(TIMEOUT) for r in results][-1]

    def check_many(self, n: int) -> None:
        assert self.last == n - 1


class TaskqRedis(Taskq):
    """The same, with the queue and task state in a local redis-server (counted in its CPU)."""

    name = "taskq on redis"
    tiers = ("server + redis", "supervisor", "workers", "task children")
    redis = True


def with_workers(cls, n: int):
    """``cls`` with ``n`` CPU workers instead of two."""
    return type(f"{cls.__name__}{n}", (cls,), {"name": f"{cls.name}, {n} workers",
                                                "__init__": lambda self, tmp: cls.__init__(self, tmp, n)})


ENGINES = {"taskq": Taskq, "huey": RawHuey, "pool": ForkPool, "taskq4": with_workers(Taskq, 4),
           "redis": TaskqRedis, "redis4": with_workers(TaskqRedis, 4)}


# -- workloads ----------------------------------------------------------------------------
def measure(engine, sizes: dict, out: dict) -> None:
    """Fill ``out`` as it goes, so a failure later keeps what was measured."""
    for i in range(sizes["warmup"]):
        assert engine.call(i) == i
    lat = []
    for i in range(sizes["latency"]):
        start = time.perf_counter()
        value = engine.call(i)
        lat.append((time.perf_counter() - start) * 1000)
        assert value == i
    out["w1_p50_ms"] = statistics.median(lat)
    out["w1_p99_ms"] = percentile(lat, 99)
    log(f"  W1 done: p50 {out['w1_p50_ms']:.1f} ms, p99 {out['w1_p99_ms']:.1f} ms, max {max(lat):.1f} ms")

    n = sizes["throughput"]
    faults = total_page_faults(engine.pids())
    cpu, start = total_cpu_seconds(engine.pids()), time.perf_counter()
    engine.run_many(n)
    out["w2_tasks_per_s"] = n / (time.perf_counter() - start)
    out["w2_cpu_ms_per_task"] = (total_cpu_seconds(engine.pids()) - cpu) / n * 1000
    out["w2_faults_per_task"] = (total_page_faults(engine.pids()) - faults) / n
    engine.check_many(n)
    log(f"  W2 done: {out['w2_tasks_per_s']:.0f} tasks/s, {out['w2_cpu_ms_per_task']:.2f} ms CPU per task")

    big, times = bytes(BIG), []
    for _ in range(sizes["big_reps"]):
        start = time.perf_counter()
        back = engine.call(big)
        times.append(time.perf_counter() - start)
        assert len(back) == BIG
        del back
    out["w3_seconds"] = statistics.median(times)
    log(f"  W3 done: {', '.join(f'{t:.2f}' for t in times)} s")

    time.sleep(1.0)  # let the last task's aftermath (result writes, spare forks) settle
    total, by_depth = tree_cpu_percent(engine.pids(), sizes["idle"])
    out["idle_cpu_pct"] = total
    out["idle_cpu_by_tier"] = {engine.tiers[min(d, len(engine.tiers) - 1)]: round(v, 3) for d, v in by_depth.items()}
    log(f"  idle: {total:.2f}% of a core ({out['idle_cpu_by_tier']})")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def verdict(metric: str, value) -> str:
    if value is None:
        return "n/a"
    _, op, target = METRICS[metric]
    return "PASS" if (value < target if op == "<" else value > target) else "MISS"


def table(results: dict) -> str:
    names = list(results)
    head = ["metric", "target (taskq)", *names, "taskq"]
    rows = []
    for metric, (label, op, target) in METRICS.items():
        cells = [fmt(results[name].get(metric)) for name in names]
        rows.append([label, f"{op} {target:g}", *cells, verdict(metric, results.get("jupyter-taskq", {}).get(metric))])
    for metric, label in INFO.items():
        rows.append([label, "", *(fmt(results[name].get(metric)) for name in names), ""])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *map(line, rows)])


def fmt(value) -> str:
    if value is None:
        return "error"
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}"


def file_create_us(directory: str, n: int = 50) -> float:
    """Median cost of creating a file in ``directory``: taskq makes a few files per task, so a
    slow filesystem (some sandboxes hook /tmp: about 1 ms a file) shows in every number."""
    times = []
    for i in range(n):
        start = time.perf_counter()
        os.close(os.open(os.path.join(directory, f"probe{i}"), os.O_WRONLY | os.O_CREAT, 0o600))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def compile_package() -> str:
    """Where ``PYTHONDONTWRITEBYTECODE`` is set (this project's VMs), an editable checkout has no bytecode for
    modules changed since it was last written, and every fresh task process compiles them again: about 4 ms
    of CPU an attempt that no installed copy pays (``pip install`` compiles). Write it once, as pip would."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return ""
    import compileall

    import jupyter_taskq

    compileall.compile_dir(str(Path(jupyter_taskq.__file__).parent), quiet=1)
    return "compileall"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run, under a minute)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--engines", default="taskq,huey,pool",
                        help=f"comma-separated subset of {','.join(ENGINES)} (redis: the queue on a local "
                             "redis-server; 4: four CPU workers)")
    parser.add_argument("--tmpdir", help="where the state directories go (default: $TMPDIR or the system's)")
    parser.add_argument("--against", metavar="REV",
                        help="also run git revision REV (e.g. main, HEAD~3), alternating with this tree, and print "
                             "both side by side (see bench/README.md)")
    parser.add_argument("--rounds", type=int, default=3, help="with --against: runs of each, alternated (default 3)")
    args = parser.parse_args(argv)
    if args.against:
        return against(args, argv if argv is not None else sys.argv[1:])
    sizes = QUICK if args.quick else FULL
    chosen = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(chosen) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engine(s): {', '.join(sorted(unknown))}")
    # SIGTERM / SIGHUP unwind like ^C, so the finally blocks below stop what was started.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))

    compiled = compile_package()
    load = os.getloadavg()[0]  # other work on the machine skews every number below
    results, errors = {}, {}
    with tempfile.TemporaryDirectory(prefix="taskq-bench-", dir=args.tmpdir) as tmp:
        create_us = file_create_us(tmp)
        for key in chosen:
            cls = ENGINES[key]
            out = results.setdefault(cls.name, {})
            root = Path(tmp) / key
            root.mkdir()
            log(f"{cls.name}: starting")
            try:
                with cls(root) as engine:
                    measure(engine, sizes, out)
            except Exception as exc:  # noqa: BLE001 - report it, keep the other engines' numbers
                errors[cls.name] = f"{type(exc).__name__}: {exc}"
                log(f"  {cls.name} failed: {errors[cls.name]}")

    print(f"\njupyter-taskq engine benchmark ({'quick' if args.quick else 'full'}): W1 {sizes['latency']} sequential"
          f" after {sizes['warmup']} warm-up, W2 {sizes['throughput']} tasks,"
          f" W3 {BIG // 10**6} MB x{sizes['big_reps']}, idle {sizes['idle']:g} s")
    print(f"machine: {os.cpu_count()} CPUs, load {load:.2f} at start, Python {platform.python_version()};"
          f" state under {Path(tmp).parent} ({create_us:.0f} us per file created)\n")
    if compiled:
        print(f"note: PYTHONDONTWRITEBYTECODE is set here; {compiled} compiled jupyter_taskq's bytecode first, as"
              " `pip install` does, so fresh task processes do not compile its modules on every attempt\n")
    if create_us > 200:
        print(f"note: creating a file costs {create_us:.0f} us under {Path(tmp).parent}; taskq creates several per"
              " task, so try --tmpdir on another filesystem to see the engine rather than the filesystem\n")
    print(table(results))
    for name, out in results.items():
        if "idle_cpu_by_tier" in out:
            tiers = ", ".join(f"{k} {v:.2f}%" for k, v in out["idle_cpu_by_tier"].items())
            print(f"idle CPU of {name} by tier: {tiers}")
    for name, error in errors.items():
        print(f"{name} FAILED: {error}")

    if args.json:
        verdicts = {m: verdict(m, results.get("jupyter-taskq", {}).get(m)) for m in METRICS}
        Path(args.json).write_text(json.dumps({
            "mode": "quick" if args.quick else "full", "sizes": sizes, "w3_bytes": BIG,
            "machine": {"cpus": os.cpu_count(), "load_at_start": load, "file_create_us": create_us,
                        "state_parent": str(Path(tmp).parent), "python": platform.python_version(),
                        "platform": platform.platform()},
            "targets": {m: {"op": op, "value": t, "taskq": verdicts[m]} for m, (_, op, t) in METRICS.items()},
            "results": results, "errors": errors,
        }, indent=2))
    return 1 if errors else 0


# -- --against REV: this tree and another revision, in turn, in the same minutes --------------------
REPO = BENCH_DIR.parent


def against(args, argv: list[str]) -> int:
    """Run this bench ``args.rounds`` times for this tree and for revision ``args.against``, alternating
    (A B, B A, A B, ...: neither always runs on the warmer or quieter side), each run a fresh process with
    that tree's ``jupyter_taskq`` first on ``PYTHONPATH``; print each metric's median per side and B/A.

    The other revision is ``git archive``d into a temporary folder and runs on this interpreter and its
    installed dependencies (a revision that needs other versions of them needs its own venv). The
    workloads are this script's, so both sides run the same code in the bench and differ only below it."""
    child_args = argv
    for option in ("--against", "--rounds", "--json"):  # the children's JSON goes to a file of ours
        child_args = _strip_option(child_args, option)
    runs: dict[str, list[dict]] = {"this tree": [], args.against: []}
    with tempfile.TemporaryDirectory(prefix="taskq-against-") as tmp:
        other = Path(tmp) / "tree"
        other.mkdir()
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.against], check=True,
                                capture_output=True, text=True).stdout.strip()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(other)], input=archive, check=True)
        trees = {"this tree": REPO, args.against: other}
        for round_no in range(args.rounds):
            order = list(trees) if round_no % 2 == 0 else list(trees)[::-1]
            for label in order:
                out = Path(tmp) / f"{round_no}-{len(runs[label])}-{'a' if label == 'this tree' else 'b'}.json"
                log(f"--against: round {round_no + 1}/{args.rounds}, {label} (load {os.getloadavg()[0]:.2f})")
                env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(trees[label]), os.environ.get("PYTHONPATH", "")]))
                subprocess.run([sys.executable, str(Path(__file__).resolve()), *child_args, "--json", str(out)],
                               env=env, stdout=subprocess.DEVNULL, check=False)
                if out.exists():
                    runs[label].append(json.loads(out.read_text()))
    loads = {side: ", ".join(f"{r['machine']['load_at_start']:.1f}" for r in done) for side, done in runs.items()}
    print(f"\n--against {args.against} ({commit}): {args.rounds} alternated runs of each, medians; loads at start: "
          f"this tree {loads['this tree']}; {args.against} {loads[args.against]}\n")
    print(against_table(runs, args.against))
    if args.json:
        Path(args.json).write_text(json.dumps({"against": args.against, "commit": commit, "runs": runs}, indent=2))
    return 0 if all(runs.values()) else 1


def _strip_option(argv: list[str], name: str) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def against_table(runs: dict[str, list[dict]], rev: str) -> str:
    a_label = "this tree"
    engines = sorted({e for side in runs.values() for r in side for e in r["results"]})
    lines = [f"{'engine':<16} {'metric':<34} {'this tree':>12} {rev:>12} {rev + ' / this (better)':>22}  runs (this | other)"]
    for engine in engines:
        for metric, label in [*((m, v[0]) for m, v in METRICS.items()), *INFO.items()]:
            values = {side: [r["results"].get(engine, {}).get(metric) for r in runs[side]] for side in runs}
            values = {side: [v for v in vals if v is not None] for side, vals in values.items()}
            if not all(values.values()):
                continue
            a, b = statistics.median(values[a_label]), statistics.median(values[rev])
            op = METRICS[metric][1] if metric in METRICS else "<"  # CPU per task: less is better
            ratio = (f"{b / a:.2f}" if a else "-") + (" (=)" if a == b else " (this)" if (a < b) == (op == "<") else
                                                      f" ({rev})")
            raw = " ".join(fmt(v) for v in values[a_label]) + " | " + " ".join(fmt(v) for v in values[rev])
            lines.append(f"{engine:<16} {label:<34} {fmt(a):>12} {fmt(b):>12} {ratio:>22}  {raw}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
