/** The REST API's JSON shapes (see README, "REST API"): one place, so every module agrees. */

import { CANCELLABLE, FINAL, STORED_STATUSES, WAITING, type TaskOptions, type TaskStatus } from './generated';

// The statuses and their sets come from jupyter_taskq/status.py (generated.ts): one source for the queue and the UI.
export { CANCELLABLE, FINAL, STORED_STATUSES, WAITING, type TaskOptions, type TaskStatus };

/** The statuses in the order the panel's filter lists them (the stored ones, each once: test/generated.test.ts). */
export const STATUSES: TaskStatus[] = [
  'PENDING',
  'RUNNING',
  'RETRY',
  'COMPLETE',
  'FAILED',
  'TIMEOUT',
  'CANCELLED',
  'EXPIRED'
];
export const FAILURES: TaskStatus[] = ['FAILED', 'TIMEOUT'];

export interface TaskOutput {
  name: string;
  size: number;
  kind?: string | null;
  url: string;
  expires_in: number | null;
}

export interface TaskError {
  type: string;
  message: string;
  traceback: string | null;
}

export interface TaskProgress {
  done: number;
  total: number | null;
  fraction: number | null;
  message: string | null;
}

/** A task as the REST API returns it; its option fields are declared in options.py (generated.ts). */
export interface Task extends TaskOptions {
  id: string;
  name: string | null;
  status: TaskStatus;
  created_at: string;
  started_at: string | null;
  ended_at: string | null;
  updated_at: string;
  attempt: number;
  max_retries: number;
  gpu: number; // how many GPUs (0: a CPU task)
  gpu_model?: string | null;
  waiting_for_gpus?: WaitingFor | null; // a waiting gpu=N task: what its machine's GPUs are busy with
  worker: string | null;
  timeout: number | null;
  expires: number | null;
  priority: number;
  callback_url: string | null;
  owner?: string | null; // who submitted it (issue 15; a hub admin sees everyone's)
  environment?: TaskEnvironment | null; // what that image resolved to (worker/images.py)
  retry_of: string | null;
  outputs: TaskOutput[];
  error: TaskError | null;
  progress: TaskProgress | null;
  result: { available: boolean; size: number | null; expired: boolean; expires_in: number | null };
  log: { url: string; dropped: number };
  // Issue 24: what a PENDING task waits for (its dependencies left, its start time) and its schedule.
  after?: string[];
  after_any_outcome?: boolean;
  waiting_for?: string[];
  start_at?: string | null;
  schedule_id?: string | null;
  [key: string]: unknown;
}

export type { ImageSpec } from './imagespec';

/** A task's image as built: its hash, Python version and resolved packages (uv pip freeze). */
export interface TaskEnvironment {
  hash: string;
  packages: string[];
  python: string | null;
}

/** A schedule (`GET schedules`): a function run on a cron expression or every interval. */
export interface Schedule {
  id: string;
  name: string | null;
  function: string | null;
  owner: string | null;
  cron: string | null;
  every: number | null;
  catch_up: string;
  paused: boolean;
  created_at: string | null;
  next_run_at: string | null;
  last_run_at: string | null;
  runs: number;
  skipped: number;
  last_task: string | null;
}

export interface TaskPage {
  tasks: Task[];
  total: number;
  limit: number;
  offset: number;
}

/** A task process kept warm on a worker (keep_warm_seconds): which function, idle for how long. */
export interface WarmProcess {
  function: string | null;
  cwd?: string | null;
  idle_s: number;
  keep_warm_seconds: number;
  attempts?: number;
}

export interface WorkerInfo {
  name: string;
  pool: string;
  device: string | null;
  model?: string | null;
  host: string | null;
  pid: number | null;
  busy: boolean;
  current_task: string | null;
  current_task_name?: string | null;
  busy_since: string | null;
  last_heartbeat: string | null;
  alive: boolean;
  started_at: string | null;
  // The task that holds this worker's GPU (issue 26): its own attempt's, or (lent) another worker's gang's;
  // gpus: the devices of that attempt, in order.
  gpu_task?: string | null;
  gpu_task_name?: string | null;
  gpus?: number[];
  lent?: boolean;
  cpus?: number | null; // the worker machine's cores and memory (MiB)
  memory_mib?: number | null;
  warm?: WarmProcess[];
}

/** One owner's line of `stats.users`: GPU-seconds today (since 00:00 UTC), this week (since Monday), tasks by status. */
export interface UserUsage {
  gpu_seconds_today?: number;
  gpu_seconds_week?: number;
  tasks?: Record<string, number>;
}

export interface Stats {
  queue_depth: Record<string, number>;
  workers: WorkerInfo[];
  counts: Record<string, number>;
  gpus: number[];
  disk_usage_bytes: number | null;
  /** Per owner: usage and tasks by status (an admin sees every owner; a user only themselves). */
  users?: Record<string, UserUsage>;
  /** Who is asking, and whether they see every owner's tasks (a hub admin, or a personal server's user). */
  you?: { name: string; sees_all: boolean };
  /** Who starts the workers (issue 22): "local", or "slurm" with its batch jobs. */
  launcher?: LauncherInfo;
}

/** One batch job of a launcher (`stats.launcher.jobs`); its workers are named `slurm-<id>/gpu<N>`. */
export interface LauncherJob {
  id: string;
  name?: string;
  /** pending, running, ending (completing, or within signal_seconds of its limit), failed (never started), ended. */
  state: string;
  slurm_state?: string | null;
  /** Slurm's reason a job waits ("Resources", "Priority"). */
  reason?: string | null;
  node?: string | null;
  /** The job's GPU devices once its workers registered; until then how many it asked for. */
  gpus?: string[] | number | null;
  /** Seconds until the job's time limit. */
  time_left?: number | null;
  workers?: string[];
  busy?: number;
  model?: string | null;
}

export interface LauncherInfo {
  kind: string;
  jobs: LauncherJob[];
  max_jobs?: number;
  min_jobs?: number;
  idle_timeout?: number;
  /** The last submission error (the launcher retries with back-off). */
  error?: string | null;
  /** Per job shape, why the scheduler refuses it outright (its tasks fail). */
  refused?: Record<string, string>;
}

export interface LogChunk {
  data: string;
  next_offset: number;
  size: number;
  reset: boolean;
  dropped: number;
  status: TaskStatus;
  /** The attempt whose log this is (older servers leave it out). */
  attempt?: number | null;
}

/** `GET changes`: `changed` is null when the server cannot tell (refetch everything). */
export interface Changes {
  cursor: string;
  changed: string[] | null;
}

export interface CancelAnswer {
  cancelled: string[];
  not_cancelled: { id: string; reason: string }[];
}

/** One attempt of a task (`GET tasks/<id>/attempts`). */
export interface Attempt {
  attempt: number;
  worker: string | null;
  device: string | null;
  started_at: string | null;
  ended_at: string | null;
  status: TaskStatus | null;
  /** complete, error, timeout, worker lost, memory, cancelled, interrupted, crashed; null while it runs. */
  reason: string | null;
  error: TaskError | null;
  /** Bytes this attempt printed (its own log: `GET tasks/<id>/logs?attempt=N`). */
  log_size?: number;
}

/**
 * `GET tasks/<id>/display`: the result's MIME bundle, made on the worker by IPython's formatter.
 * `data` is empty when there is nothing to show; `left_out` names types over the size cap.
 * Its `text/html` is the task's own: render it sanitised, as untrusted.
 */
export interface DisplayBundle {
  task_id: string;
  data: Record<string, unknown>;
  metadata: Record<string, unknown>;
  left_out: string[];
}

/** `GET groups/<id>`: a displayed group of tasks, summarised by the server. */
export interface GroupSummary {
  id: string;
  count: number;
  counts: Record<string, number>;
  done: boolean;
  gone: boolean;
  tasks: Task[];
  task_ids?: string[];
}

/** `GET tasks?notebook=`: one notebook's tasks by cell id, then status (issue 14's cell marks). */
export interface CellCounts {
  cells: Record<string, Record<string, number>>;
  total: number;
}

/** What a waiting gpu=N task waits for (issue 26): its reservation on a machine. */
export interface WaitingFor {
  gpus: number;
  busy: number;
  machine?: string;
  until: number | null; // epoch seconds: when the last reserved GPU frees up at the latest (null: unknown)
  reserved?: number[];
  held_by?: string[];
  message: string;
}
