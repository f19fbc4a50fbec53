"""The Jupyter server extension: configuration, REST routes, and the worker supervisor.

Configure with ``c.TaskQueue.<option>`` in ``jupyter_server_config.py`` or
``--TaskQueue.<option>=...`` on the command line. On start the extension opens
the queue in the state directory, re-queues anything a crash left unqueued,
starts ``jupyter taskq worker`` as a child process (restarted if it dies), and
sweeps for lost and expired tasks and expired results in the background.
"""

from __future__ import annotations

import asyncio
import datetime
import time

from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import IOLoop, PeriodicCallback
from traitlets import Bool, Dict, Float, Int, List, Unicode, default, validate

from ..imagecache import image_dir
from ..backends import BackendRefused, open_backend
from ..gpus import parse_gpus
from ..recovery import expire_overdue_tasks, recover_lost_tasks
from ..storeerrors import keep_reserve
from ..status import CANCELLABLE as ACTIVE
from ..statedir import default_state_dir
from ..hub.hubtenancy import HubTenancy
from ..hub.options import HubOptions
from ..hub.tenancy import SingleUserTenancy
from ..workerconfig import WorkerConfig
from .changes import ChangeFeed
from .handlers.routes import handlers
from .kernelenv import export_to_kernels
from .notstarted import failure_reason, not_started_handlers, not_started_message
from .offloop import favour_the_loop, freeze_startup_objects, make_executor, run
from .pipelines import release_held
from .schedules import ScheduleService
from .service import TaskService
from .traits import LauncherType, ListOption, TextOrListOption
from .webhooks import CallbackGuard, WebhookSender, load_or_create_secret

SWEEP_MS = 1000


class TaskQueue(HubOptions, ExtensionApp):
    """jupyter-taskq: a persistent GPU-aware task queue for notebooks."""

    name = "jupyter_taskq"

    state_dir = Unicode(
        "", config=True,
        help="Directory for the queue database, payloads, results and logs (created 0700). "
             "Default: <jupyter data dir>/taskq.",
    )
    gpus = TextOrListOption(
        [Unicode(), List(Int())], default_value="auto", config=True,
        help='GPUs to run workers on: "auto" (detect with NVML or nvidia-smi), a list such as [0, 1], '
             'or [] for none. Each GPU gets workers_per_gpu workers pinned with CUDA_VISIBLE_DEVICES.',
    )
    gpu_model = Unicode(
        "", config=True,
        help='Model name of the GPUs in `gpus` (default: as the driver reports it, e.g. "NVIDIA A100-SXM4-80GB"). '
             'A task asking for gpu="A100" runs only on a GPU whose model name contains "A100".',
    )
    workers_per_gpu = Int(WorkerConfig.default("workers_per_gpu"), config=True,
                          help="Worker processes per GPU (each runs one task at a time).")
    cpu_workers = Int(WorkerConfig.default("cpu_workers"), config=True,
                      help="Worker processes for tasks that ask for no GPU (they see no GPU).")
    max_retries = Int(3, config=True, help="Retries of a failing task unless it sets its own max_retries.")
    retry_delay = Float(0.0, config=True, help="Seconds before a failed task's next attempt (default for tasks).")
    retry_backoff = Float(1.0, config=True, help="Multiplier applied to retry_delay after each failed attempt (>= 1).")
    result_ttl = Float(24 * 3600.0, config=True,
                       help="Seconds a finished task's result and payload are kept (default 24 h).")
    heartbeat_timeout = Float(WorkerConfig.default("heartbeat_timeout"), config=True,
                              help="Seconds without a worker heartbeat after which its running task is re-queued.")
    kill_grace = Float(WorkerConfig.default("kill_grace"), config=True,
                       help="Seconds between SIGTERM and SIGKILL when cancelling or timing out.")
    start_workers = Bool(True, config=True,
                         help="Start and supervise local workers. Set False when workers run on their own "
                              "(`jupyter taskq worker`).")
    log_max_bytes = Int(WorkerConfig.default("log_max_bytes"), config=True,
                        help="Cap of a task's captured stdout/stderr log; past it the log keeps its tail.")
    webhook_secret = Unicode("", config=True,
                             help="Secret that signs callback_url deliveries (HMAC-SHA256). Default: a random "
                                  "secret kept in the state directory (file webhook_secret).")
    cleanup_interval = Float(60.0, config=True, help="Seconds between clean-ups of results past their TTL.")
    backend_class = Unicode(
        "", config=True,
        help='Where the queue lives: "sqlite" (a file in state_dir), "redis" (redis_url), "memory" (this process '
             'only: in-process tests, with start_workers=False) or the dotted path of a backends.base.Backend '
             'subclass (docs/backends.md). Empty: "redis" when redis_url is set, else "sqlite". A name that '
             'does not import keeps the queue from starting (the API says why).',
    )

    redis_url = Unicode(
        "", config=True,
        help="Run the queue on this Redis server (redis://[:password@]host:port/db, or rediss:// for TLS) "
             "instead of the SQLite file, so workers on other machines can join with "
             "`jupyter taskq worker --redis URL --files-dir DIR`. Empty: SQLite in state_dir.",
    )
    files_dir = Unicode(
        "", config=True,
        help="With redis_url: where payloads, results, logs and outputs live: a directory every machine that "
             "runs workers mounts, or an fsspec URL of an object store (s3://bucket/prefix). Default: state_dir.",
    )
    files_options = Dict(
        config=True,
        help="fsspec options of an object-store files_dir, e.g. {\"endpoint_url\": \"https://minio:9000\"} "
             "for an S3-compatible server (credentials: the usual AWS variables or profile).",
    )
    redis_allow_volatile = Bool(
        False, config=True,
        help="Start even when the Redis server of redis_url has neither AOF nor RDB persistence (a restart of "
             "Redis then loses every task). Default: refuse to start, saying why.",
    )
    webhook_allowed_networks = ListOption(
        Unicode(), default_value=[], config=True,
        help="Networks (CIDR, e.g. [\"10.0.0.0/8\", \"127.0.0.1/32\"]) that callback_url may reach although they "
             "are loopback, link-local, private or otherwise not public. Default: public addresses only.",
    )
    record_ttl = Float(
        30 * 24 * 3600.0, config=True,
        help="Seconds a finished task's record (its row: status, error, timings) is kept after it ended; then it "
             "is purged like DELETE tasks/{id} (default 30 days; its files go earlier, after result_ttl). "
             "0 keeps records forever.",
    )
    launcher_class = LauncherType(
        default_value="jupyter_taskq.worker.launchers.local.LocalLauncher",
        klass="jupyter_taskq.worker.launchers.base.Launcher", config=True,
        help='What starts the workers: "local" (a worker supervisor on this machine, the default), "slurm" '
             '(workers as Slurm batch jobs that come and go with the queue: docs/slurm.md, c.SlurmLauncher), '
             "or the dotted name of a jupyter_taskq.worker.launchers.base.Launcher subclass.",
    )
    max_payload_size = Int(4 * 1024 ** 3, config=True, help="Largest accepted payload, in bytes (default 4 GiB).")
    image_dir = Unicode(
        "", config=True,
        help="Where task images (image=) are built and cached, by the hash of their spec. On a filesystem that "
             "several machines mount, one machine builds each image (under a file lock) and the others use it. "
             "Default: <state_dir>/images.",
    )
    image_cache_bytes = Int(
        20 * 1024 ** 3, config=True,
        help="Size limit of the image cache in bytes; past it the least recently used images not in use are "
             "removed (a later task rebuilds). Default 20 GiB.",
    )

    @validate("image_cache_bytes")
    def _validate_image_cache_bytes(self, proposal):
        from traitlets import TraitError

        from ..imagecache import check_cache_bytes

        try:
            return check_cache_bytes(proposal["value"])
        except ValueError as exc:
            raise TraitError(str(exc)) from None

    @default("state_dir")
    def _default_state_dir(self):
        return str(default_state_dir())

    @validate("webhook_allowed_networks")
    def _validate_networks(self, proposal):
        import ipaddress

        from traitlets import TraitError

        networks = proposal["value"]  # every list form is read by ListOption (traits.py)
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise TraitError(f"TaskQueue.webhook_allowed_networks: {exc}") from None
        return networks

    @validate("gpus")
    def _validate_gpus(self, proposal):
        value = proposal["value"]  # a literal list given as text is read by TextOrListOption (traits.py)
        if value == "auto":
            return value
        try:
            return parse_gpus(value)
        except ValueError as exc:
            from traitlets import TraitError

            raise TraitError(f"TaskQueue.gpus: {exc}") from None

    # -- set-up -----------------------------------------------------------
    #: Why the queue did not start (None: it did). Set by _not_starting; see notstarted.py.
    _failure: str | None = None

    def _not_starting(self, exc: BaseException) -> None:
        """Any failure while the extension links, loads or starts: one CRITICAL line, then 503s."""
        reason = failure_reason(exc, sorted(self.class_trait_names(config=True)))
        self.log.critical("jupyter-taskq: not starting: %s", reason)
        self._failure = not_started_message(reason)

    def _link_jupyter_server_extension(self, serverapp):
        try:
            super()._link_jupyter_server_extension(serverapp)
        except Exception as exc:  # a bad option value: the server runs on, saying so (not a 404 page)
            self.serverapp = serverapp
            self._not_starting(exc)

    def initialize_settings(self):
        if self._failure is None:
            try:
                self._initialize_queue()
            except Exception as exc:  # noqa: BLE001 - whatever it is, say it where users look
                self._not_starting(exc)
        if self._failure is not None:
            self.settings["taskq_failure"] = self._failure

    def _initialize_queue(self):
        self.backend = open_backend(self.backend_class, self.redis_url, state_dir=self.state_dir,
                                    files_dir=self.files_dir or None, files_options=self.files_options or None,
                                    allow_volatile=self.redis_allow_volatile)
        self._check_backend()  # before the store opens (SQLite: which would create an empty database)
        self.state = self.backend.state
        self.device_list = parse_gpus(self.gpus)
        self.store = self.backend.open_store()
        self.queues = self.backend.open_queues()
        self.changes = ChangeFeed(self.backend.events_listener())
        self.service = TaskService(
            self.state, self.store, self.queues, gpus=self.device_list, workers_per_gpu=self.workers_per_gpu,
            cpu_workers=self.cpu_workers, max_retries=self.max_retries, retry_delay=self.retry_delay,
            retry_backoff=self.retry_backoff, result_ttl=self.result_ttl, base_url=self.serverapp.base_url,
            on_change=self.changes.notify, on_changes=self.changes.notify_many,
            work_bells=self.backend.work_bells(), objects=self.backend.objects,
        )
        self.schedules = ScheduleService(self.service, self.backend)
        secret = self.webhook_secret or load_or_create_secret(self.state.root / "webhook_secret")
        guard = CallbackGuard(self.webhook_allowed_networks)
        self.service.callback_guard = guard  # callback_url to a refused address: 400 at submission
        self.service.image_dir = image_dir(self.state.root, self.image_dir)  # GET stats lists its images
        self.webhooks = WebhookSender(self.service, secret, guard=guard)
        self.executor = make_executor()  # the service's blocking work, off the event loop
        favour_the_loop()  # the loop takes the GIL back within 1 ms, not 5 ms, while the pool works
        # Who asks and what they see (hub/tenancy.py): the hub-wide queue's owners, admins, quotas, fair share;
        # a personal server's user, who sees everything.
        self.tenancy = HubTenancy.from_options(self, self.serverapp.identity_provider) if self.is_hub_service \
            else SingleUserTenancy()
        self.tenancy.start(self.state, self.log)
        self.settings.update(taskq_service=self.service, taskq_changes=self.changes,
                             taskq_max_payload=self.max_payload_size, taskq_executor=self.executor,
                             taskq_schedules=self.schedules, taskq_tenancy=self.tenancy)
        self.launcher = self.launcher_class(parent=self) if self.start_workers else None
        if self.launcher is not None:
            self.launcher.check()  # a configuration it cannot work with: one line, before anything starts
        self.service.launcher = self.launcher  # GET stats shows what it runs; waiting tasks say what they wait for
        self._sweeper: PeriodicCallback | None = None
        self.log.info("jupyter-taskq: %s queue, state in %s, GPUs %s, %d CPU workers", self.backend.kind,
                      self.state.root, self.device_list, self.cpu_workers)

    def _check_backend(self) -> None:
        """Refuse to start on a backend that would lose tasks (a Redis that keeps nothing on disk: exit; an
        unreadable SQLite database: the API says why), and log what it warns of."""
        try:
            warnings = self.backend.check()
        except BackendRefused as exc:
            self.log.critical("jupyter-taskq: not starting: %s", exc)
            raise SystemExit(f"jupyter-taskq: not starting: {exc}") from None
        for warning in warnings:
            self.log.warning("jupyter-taskq: %s", warning)

    def initialize_handlers(self):
        from .widgetjs import handlers as widget_bundle_handlers

        self.handlers.extend(widget_bundle_handlers())  # the notebook widget's code, whatever the mode
        if self._failure is not None:
            self.handlers.extend(not_started_handlers(self._failure))
            return
        self.handlers.extend(handlers("/"))  # ExtensionApp puts base_url in front of each pattern itself

    async def _start_jupyter_server_extension(self, serverapp):
        if self._failure is not None:  # no timers, sweeps or workers; kernels still find it (and its 503)
            export_to_kernels(serverapp)
            return
        try:
            self._start_queue()
        except Exception as exc:  # noqa: BLE001 - e.g. no process could be started: say so, stop what started
            self._not_starting(exc)
            serverapp.web_app.settings["taskq_failure"] = self._failure  # the API answers 503 (handlers/base.py)
            await self.stop_extension()
        export_to_kernels(serverapp)
        IOLoop.current().add_callback(freeze_startup_objects)  # once every extension has loaded

    def _start_queue(self) -> None:
        self.changes.start()
        try:
            requeued = self.service.reconcile()
        except Exception:  # noqa: BLE001 - nothing in the store may stop the server: bad rows fail one by one
            self.log.exception("jupyter-taskq: re-queueing waiting tasks at start-up failed; starting anyway")
            requeued = []
        if requeued:
            self.log.warning("jupyter-taskq: re-queued %d waiting task(s) that had no queue entry", len(requeued))
        if self.launcher is not None:
            self.launcher.start()
        self._next_cleanup = 0.0
        self._sweeper = PeriodicCallback(self._sweep, SWEEP_MS)
        self._sweeper.start()

    async def _sweep(self) -> None:
        """Once a second, on the thread pool (store queries and object-store deletes block): keep the
        supervisor alive, recover lost tasks, expire overdue ones; then start due webhook deliveries."""
        try:
            due = await run(self.executor, self._sweep_blocking)
            self.webhooks.deliver_due(due)
        except Exception:  # never let a sweep error stop the sweeps
            self.log.exception("jupyter-taskq: background sweep failed")

    def _sweep_blocking(self) -> list[str]:
        """The sweep's blocking part; returns the tasks whose webhook is due."""
        try:
            if self.launcher is not None:
                try:
                    self.launcher.tick()  # keep its workers alive, scale to the queue (may run sbatch: off the loop)
                except Exception:  # noqa: BLE001 - the sweeps go on
                    self.log.exception("jupyter-taskq: the %s launcher failed", self.launcher.kind)
            # The space a cancel or delete may use on a full disk (storeerrors.py): kept here too, for a server
            # whose workers run elsewhere (start_workers=False), where no supervisor of ours keeps it.
            keep_reserve(self.state.root)
            recover_lost_tasks(self.store, self.queues, self.heartbeat_timeout, self.changes.notify)
            expire_overdue_tasks(self.store, self.changes.notify)
            release_held(self.service)  # dependencies met, start times come (issue 24)
            self.schedules.fire_due()  # periodic tasks (issue 24)
            if self.store.count(ACTIVE):
                # Work in flight counts as activity, so an idle-shutdown server never cuts it short.
                assert self.serverapp is not None  # an extension runs in its server
                self.serverapp.web_app.settings["api_last_activity"] = datetime.datetime.now(datetime.timezone.utc)
            if time.monotonic() >= self._next_cleanup:
                self._next_cleanup = time.monotonic() + self.cleanup_interval
                self.service.expire_old_results()
                self.service.purge_old_records(self.record_ttl)
        except Exception:  # never let a sweep error stop the sweeps
            self.log.exception("jupyter-taskq: background sweep failed")
        return self.store.callbacks_due()

    async def stop_extension(self):
        """Stops what started; after a failed or partial start, only that (a server must always stop)."""
        if getattr(self, "_sweeper", None) is not None:
            self._sweeper.stop()
        if getattr(self, "webhooks", None) is not None:
            await self.webhooks.close()
        if getattr(self, "changes", None) is not None:
            self.changes.stop()
        if getattr(self, "backend", None) is not None:
            self.backend.close()
        if getattr(self, "executor", None) is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        launcher = getattr(self, "launcher", None)
        if launcher is not None:
            loop = asyncio.get_running_loop()
            try:
                await asyncio.wait_for(loop.run_in_executor(None, launcher.stop), self.kill_grace + 40)
            except asyncio.TimeoutError:
                self.log.error("jupyter-taskq: the %s launcher did not stop in time", launcher.kind)
