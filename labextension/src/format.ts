/** Turning task and stats JSON into the short texts the panel and the status bar show. */

import { FAILURES, type LauncherInfo, type LauncherJob, type Stats, type Task, type WarmProcess, type WorkerInfo } from './types';

const ms = (iso: string | null | undefined): number | null => (iso ? Date.parse(iso) : null);

/** "0.4 s", "42 s", "3 min 05 s", "2 h 03 min". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds) || seconds < 0) {
    return '';
  }
  if (seconds < 10) {
    return `${seconds.toFixed(1)} s`;
  }
  const s = Math.floor(seconds);
  if (s < 60) {
    return `${s} s`;
  }
  const pad = (n: number) => String(n).padStart(2, '0');
  if (s < 3600) {
    return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  }
  return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
}

/** Seconds the task has run: start to end, or start to now while it runs; null before it starts. */
export function taskDuration(task: Pick<Task, 'started_at' | 'ended_at'>, now: number): number | null {
  const start = ms(task.started_at);
  if (start === null) {
    return null;
  }
  const end = ms(task.ended_at) ?? now;
  return Math.max(0, (end - start) / 1000);
}

/** "12 s ago", "5 min ago", "3 h ago", else the local date and time. */
export function formatCreated(iso: string | null, now: number): string {
  const t = ms(iso);
  if (t === null || isNaN(t)) {
    return '';
  }
  const age = Math.max(0, (now - t) / 1000);
  if (age < 60) {
    return `${Math.floor(age)} s ago`;
  }
  if (age < 3600) {
    return `${Math.floor(age / 60)} min ago`;
  }
  if (age < 86400) {
    return `${Math.floor(age / 3600)} h ago`;
  }
  return new Date(t).toLocaleString();
}

/** "n/m": attempt n of the m the task may have (1 + max_retries). */
export function attemptLabel(task: Pick<Task, 'attempt' | 'max_retries'>): string {
  return `${task.attempt}/${task.max_retries + 1}`;
}

/** The worker that ran (or runs) the task, else the kind of worker it waits for. */
export function workerLabel(task: Pick<Task, 'worker' | 'gpu'>): string {
  if (task.worker) {
    return task.worker;
  }
  return task.gpu > 1 ? `${task.gpu} GPUs on one machine` : task.gpu ? 'any GPU' : 'any CPU';
}

/** 0..1 for the progress bar, or null when the task reports no fraction. */
export function progressFraction(task: Pick<Task, 'status' | 'progress'>): number | null {
  if (task.status === 'COMPLETE') {
    return 1;
  }
  const f = task.progress?.fraction;
  return typeof f === 'number' && isFinite(f) ? Math.min(1, Math.max(0, f)) : null;
}

/** "GPU 0" for a GPU worker, "CPU" otherwise. */
export function deviceLabel(worker: Pick<WorkerInfo, 'pool' | 'device' | 'model'>): string {
  if (worker.pool !== 'gpu') {
    return 'CPU';
  }
  const label = `GPU ${worker.device ?? '?'}`;
  return worker.model ? `${label} · ${worker.model}` : label;
}

/** What a task asks for: "no", "any", "2 (any model)", "A100", "4 × A100". */
export function gpuRequestLabel(task: Pick<Task, 'gpu' | 'gpu_model'>): string {
  const n = task.gpu || 0;
  if (!n) {
    return 'no';
  }
  if (task.gpu_model) {
    return n > 1 ? `${n} × ${task.gpu_model}` : task.gpu_model;
  }
  return n > 1 ? `${n} (any model)` : 'any';
}

/** A GPU tile's holder: "" when free; "GPUs 2,3" for a gang; lent tiles say whose gang holds them. */
export function gpuHoldingLabel(worker: Pick<WorkerInfo, 'pool' | 'gpus' | 'lent' | 'gpu_task'>): string {
  if (worker.pool !== 'gpu' || !worker.gpu_task) {
    return '';
  }
  const gpus = worker.gpus ?? [];
  const gang = gpus.length > 1 ? `GPUs ${gpus.join(',')}` : '';
  return worker.lent ? `in a gang${gang ? ` (${gang})` : ''}` : gang;
}

/** "waiting for 4 GPUs on one machine: 3 busy until about 14:20", the time in the browser's zone. */
export function waitingForText(task: Pick<Task, 'waiting_for_gpus'>): string {
  const w = task.waiting_for_gpus;
  if (!w) {
    return '';
  }
  const what = `waiting for ${w.gpus} GPU${w.gpus === 1 ? '' : 's'} on one machine`;
  if (typeof w.until === 'number' && isFinite(w.until)) {
    const at = new Date(w.until * 1000);
    const hhmm = `${String(at.getHours()).padStart(2, '0')}:${String(at.getMinutes()).padStart(2, '0')}`;
    return `${what}: ${w.busy} busy until about ${hhmm}`;
  }
  return w.message || `${what}: ${w.busy} busy`;
}

export function failureCount(stats: Pick<Stats, 'counts'> | null): number {
  if (!stats) {
    return 0;
  }
  return FAILURES.reduce((sum, s) => sum + (stats.counts[s] || 0), 0);
}

export function runningCount(stats: Pick<Stats, 'counts'> | null): number {
  return stats ? stats.counts.RUNNING || 0 : 0;
}

export function queuedCount(stats: Pick<Stats, 'counts'> | null): number {
  return stats ? (stats.counts.PENDING || 0) + (stats.counts.RETRY || 0) : 0;
}

/** The status bar text: "N running · M queued", plus "· K failed" for failures since last looked. */
export function statusBarText(stats: Pick<Stats, 'counts'> | null, seenFailures: number | null): string {
  if (!stats) {
    return 'Task queue …';
  }
  let text = `${runningCount(stats)} running · ${queuedCount(stats)} queued`;
  const fresh = failureCount(stats) - (seenFailures ?? failureCount(stats));
  if (fresh > 0) {
    text += ` · ${fresh} failed`;
  }
  return text;
}

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) {
    return '';
  }
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/**
 * The server path (what `docmanager:open` takes) of a notebook a task recorded: kernels know their
 * notebook as a file-system path (JPY_SESSION_NAME), the server's contents API wants it relative to
 * its root. A path outside the root, or already relative, is given back as it is.
 */
export function serverPath(notebook: string, serverRoot: string): string {
  const path = notebook.replace(/\\/g, '/');
  const root = serverRoot.replace(/\\/g, '/').replace(/\/+$/, '');
  if (root && path.startsWith(`${root}/`)) {
    return path.slice(root.length + 1);
  }
  return path;
}

/** A warm task process in a worker tile: "fit_svc · idle 12 s of 5 min" (the function's last dotted part). */
export function warmLabel(warm: WarmProcess): string {
  const name = (warm.function || '?').split(/[.:]/).pop() || '?';
  const idle = formatDuration(Math.max(0, warm.idle_s)) || '0 s';
  return `${name} · idle ${idle} of ${formatDuration(warm.keep_warm_seconds)}`;
}

/** GPU time in the Usage section: "0 s" for none, else as formatDuration ("42 s", "1 h 02 min"). */
export function formatGpuTime(seconds: number | null | undefined): string {
  return seconds && seconds > 0 ? formatDuration(seconds) : '0 s';
}

export interface UsageRow {
  name: string;
  you: boolean;
  today: string;
  week: string;
  running: number;
  queued: number;
  failed: number;
}

/**
 * The panel's Usage lines from `stats.users`: the caller first, then by GPU time this week. A user who does not
 * see everyone gets only their own line (the server already sends only theirs; this keeps it so). Empty when
 * the server sends no `users` (an older server), so the section hides.
 */
export function usageRows(stats: Pick<Stats, 'users' | 'you'> | null): UsageRow[] {
  const users = stats?.users;
  if (!users) {
    return [];
  }
  const you = stats.you;
  const names = Object.keys(users).filter(n => !you || you.sees_all || n === you.name);
  const week = (n: string) => users[n].gpu_seconds_week ?? 0;
  names.sort((a, b) => Number(b === you?.name) - Number(a === you?.name) || week(b) - week(a) || a.localeCompare(b));
  return names.map(name => {
    const tasks = users[name].tasks ?? {};
    const counts = { counts: tasks };
    return {
      name,
      you: name === you?.name,
      today: formatGpuTime(users[name].gpu_seconds_today),
      week: formatGpuTime(users[name].gpu_seconds_week),
      running: runningCount(counts),
      queued: queuedCount(counts),
      failed: failureCount(counts)
    };
  });
}

/** An image spec in one line for the detail view: a kernel, an interpreter, or packages and Python version. */
export function imageLabel(spec: {
  python_packages: string[];
  python_version: string | null;
  kernel: string | null;
  python: string | null;
}): string {
  if (spec.kernel) {
    return `kernel ${spec.kernel}`;
  }
  if (spec.python) {
    return spec.python;
  }
  const parts = [...spec.python_packages, ...(spec.python_version ? [`Python ${spec.python_version}`] : [])];
  return parts.length ? parts.join(', ') : '(no packages)';
}

/** "Slurm" for "slurm": how the panel names a launcher's jobs. */
export function launcherName(kind: string): string {
  return kind === 'slurm' ? 'Slurm' : kind.charAt(0).toUpperCase() + kind.slice(1);
}

/** "pending: Resources", "running", "ending", "failed"; Slurm's reason only where it explains a wait or a failure. */
export function jobStateLabel(job: Pick<LauncherJob, 'state' | 'reason'>): string {
  const why = job.reason && job.reason !== 'None' && (job.state === 'pending' || job.state === 'failed') ? job.reason : '';
  return why ? `${job.state}: ${why}` : job.state;
}

/** "GPUs 0,1" once the job's workers registered their devices, "1 GPU" / "2 GPUs" while only the request is known. */
export function jobGpusLabel(job: Pick<LauncherJob, 'gpus'>): string {
  const g = job.gpus;
  if (Array.isArray(g)) {
    return g.length === 0 ? '' : `GPU${g.length === 1 ? '' : 's'} ${g.join(',')}`;
  }
  return typeof g === 'number' && isFinite(g) && g > 0 ? `${g} GPU${g === 1 ? '' : 's'}` : '';
}

/** "56 min 40 s left"; "" before Slurm says (pending) or once the job ends. */
export function jobTimeLeftLabel(job: Pick<LauncherJob, 'time_left' | 'state'>): string {
  if (job.state !== 'running' && job.state !== 'ending') {
    return '';
  }
  const text = formatDuration(job.time_left);
  return text ? `${text} left` : '';
}

/** One line for a job's tile or tooltip: "Slurm job 1234 · running · gpu07 · GPU 2 · 56 min 40 s left". */
export function jobSummary(job: LauncherJob, kind: string): string {
  return [`${launcherName(kind)} job ${job.id}`, jobStateLabel(job), job.node ?? '', jobGpusLabel(job), jobTimeLeftLabel(job)]
    .filter(Boolean)
    .join(' · ');
}

/** A launcher's job and the live worker tiles that run in it. */
export interface JobGroup {
  job: LauncherJob;
  workers: WorkerInfo[];
}

/**
 * The header's layout: the workers of each launcher job grouped under that job (in the launcher's order,
 * pending and failed jobs included, with no worker yet), and the other workers (CPU, local GPUs) apart.
 * A worker belongs to the job whose `workers` list names it: the launcher is the one place that knows.
 */
export function groupWorkersByJob(
  workers: WorkerInfo[],
  launcher: Pick<LauncherInfo, 'jobs'> | null | undefined
): { jobs: JobGroup[]; others: WorkerInfo[] } {
  const jobOf = new Map<string, number>();
  const jobs: JobGroup[] = (launcher?.jobs ?? []).map((job, i) => {
    for (const name of job.workers ?? []) {
      jobOf.set(name, i);
    }
    return { job, workers: [] };
  });
  const others: WorkerInfo[] = [];
  for (const w of workers) {
    const i = jobOf.get(w.name);
    if (i === undefined) {
      others.push(w);
    } else {
      jobs[i].workers.push(w);
    }
  }
  return { jobs, others };
}

/** What stops a launcher's jobs, one line each: its last submission error (retried), and shapes the scheduler refuses. */
export function launcherProblems(launcher: Pick<LauncherInfo, 'kind' | 'error' | 'refused'> | null | undefined): string[] {
  if (!launcher) {
    return [];
  }
  const name = launcherName(launcher.kind);
  const found = launcher.error ? [`${name}: ${launcher.error}`] : [];
  for (const [shape, reason] of Object.entries(launcher.refused ?? {})) {
    found.push(`${name} refuses the ${shape} worker job: ${reason}`);
  }
  return found;
}
