/**
 * The state of one task output in a notebook (a displayed handle or group), kept live from the REST
 * API without the kernel: the output names its tasks (`application/vnd.jupyter-taskq.tasks+json`),
 * this model reads them, and refreshes when the shared change feed (the sidebar's long-poll of
 * `GET changes`) reports one of them. So it stays live after a page reload, with the kernel shut
 * down, and in a notebook opened days later; a deleted task reads as gone. It imports nothing from
 * JupyterLab, so it is unit-tested in Node.
 */

import { ApiError, type TaskqApi } from './api';
import { LIST_ERROR_CHARS, LIST_LIMIT } from './generated';
import { LogTail } from './logtail';
import type { ChangeListener } from './poller';
import { taskLine } from './taskline';
import { CANCELLABLE, FINAL, type DisplayBundle, type Task, type TaskStatus } from './types';

export const TASKS_MIME = 'application/vnd.jupyter-taskq.tasks+json';

/** What the kernel puts in the notebook: task ids (a few), or a server-side group id. */
export interface TaskRef {
  version: number;
  api: string;
  task_ids?: string[];
  group?: string;
  count?: number;
}

const TASK_ID = /^[A-Za-z0-9._-]{1,100}$/;
const GROUP_ID = /^[0-9a-f]{32}$/;

/**
 * The bundle as a TaskRef, or null when it is not one we can follow. Saved notebooks come from
 * anywhere: ids are checked so that nothing but our own API paths is ever requested.
 */
export function parseRef(data: unknown): TaskRef | null {
  if (!data || typeof data !== 'object') {
    return null;
  }
  const raw = data as Record<string, unknown>;
  const api = typeof raw.api === 'string' ? raw.api : 'taskq/api/';
  const version = typeof raw.version === 'number' ? raw.version : 1;
  if (typeof raw.group === 'string' && GROUP_ID.test(raw.group)) {
    const count = typeof raw.count === 'number' ? raw.count : undefined;
    return { version, api, group: raw.group, count };
  }
  const ids = raw.task_ids;
  if (Array.isArray(ids) && ids.length > 0 && ids.every(i => typeof i === 'string' && TASK_ID.test(i))) {
    return { version, api, task_ids: [...(ids as string[])] };
  }
  return null;
}

/** Subscribes to changed task ids (null: anything may have changed); returns the unsubscribe. */
export interface ChangeSource {
  onChange(listener: ChangeListener): () => void;
}

export interface OutputModelOptions {
  /** Tasks of a group shown in the list. */
  listLimit?: number;
  /** ms between log reads while the log is open and the task runs. */
  logInterval?: number;
  /** Characters of log kept. */
  logTail?: number;
}

/** A task's result display as far as it is known: its bundle, or why there is none. */
export interface ResultDisplay {
  bundle: DisplayBundle | null;
  error: string | null;
  loading: boolean;
}

const NO_DISPLAY: ResultDisplay = { bundle: null, error: null, loading: false };

const isFinal = (status: TaskStatus | null | undefined) => status === null || status === undefined || FINAL.includes(status);

export class TaskOutputModel {
  /** The tasks shown: the one task, or the first `listLimit` of a group. */
  tasks: Task[] = [];
  /** Count per status over the whole group (MISSING: deleted tasks). */
  counts: Record<string, number> = {};
  total: number;
  done = false;
  gone = false;
  loaded = false;
  error: string | null = null;
  /** The answer to the last button press ("cancel requested", "retried as ..."). */
  message: string | null = null;
  logOpen = false;
  busy = false;
  /** The group's rows whose result is shown (expanded by the user): only those results are read. */
  expanded = new Set<string>();

  private groupIds: Set<string> | null = null;
  private listeners = new Set<() => void>();
  private refListeners = new Set<(ref: TaskRef) => void>();
  private unsubscribe: (() => void) | null = null;
  private seq = 0;
  /** Result displays read, by task: each is read once, when asked, never on each change. */
  private displays = new Map<string, ResultDisplay>();
  private readonly logTail: LogTail;
  private disposed = false;
  private readonly listLimit: number;

  constructor(
    private readonly api: TaskqApi,
    private readonly changes: ChangeSource,
    public ref: TaskRef,
    options: OutputModelOptions = {}
  ) {
    this.listLimit = options.listLimit ?? 50;
    this.logTail = new LogTail(options.logTail ?? 20000, options.logInterval ?? 1000, error => {
      if (error) {
        this.error = error.message;
      }
      this.emit();
    });
    this.total = ref.task_ids?.length ?? ref.count ?? 0;
  }

  /** A single task (not a group): the output shows its detail, log and Retry. */
  get isSingle(): boolean {
    return !this.ref.group && (this.ref.task_ids?.length ?? 0) === 1;
  }

  get task(): Task | null {
    return this.isSingle ? (this.tasks[0] ?? null) : null;
  }

  get canCancel(): boolean {
    return Object.entries(this.counts).some(([s, n]) => n > 0 && CANCELLABLE.includes(s as TaskStatus));
  }

  /** The single task's log tail, read while its section is open. */
  get log(): string {
    return this.logTail.text;
  }

  /** The single task's result as a MIME bundle, read once when it is COMPLETE (null: none yet). */
  get display(): DisplayBundle | null {
    return this.task ? this.resultOf(this.task.id).bundle : null;
  }

  /** Why the single task's result cannot be shown (expired, unreadable); null when it can or is not asked yet. */
  get displayError(): string | null {
    return this.task ? this.resultOf(this.task.id).error : null;
  }

  /** What is known of a task's result display (nothing until it was read). */
  resultOf(taskId: string): ResultDisplay {
    return this.displays.get(taskId) ?? NO_DISPLAY;
  }

  get canRetry(): boolean {
    const task = this.task;
    return Boolean(task && FINAL.includes(task.status));
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Called when the output now names other tasks (a retry): the renderer saves the new bundle. */
  onRefChange(listener: (ref: TaskRef) => void): () => void {
    this.refListeners.add(listener);
    return () => this.refListeners.delete(listener);
  }

  private emit(): void {
    this.listeners.forEach(l => l());
  }

  /** Starts following the change feed and reads the tasks once. */
  start(): Promise<void> {
    if (!this.unsubscribe) {
      this.unsubscribe = this.changes.onChange(changed => {
        if (this.concerns(changed)) {
          void this.refresh();
        }
      });
    }
    return this.refresh();
  }

  /** Whether a change-feed answer touches this output's tasks. */
  concerns(changed: string[] | null): boolean {
    if (changed === null) {
      return true;
    }
    const ids = this.ref.task_ids ? new Set(this.ref.task_ids) : this.groupIds;
    if (!ids) {
      return changed.length > 0; // a group whose ids are not known yet
    }
    return changed.some(id => ids.has(id));
  }

  /** Reads the tasks again; a newer read wins over an older one still in flight. */
  async refresh(): Promise<void> {
    const seq = ++this.seq;
    const ref = this.ref;
    try {
      if (ref.group) {
        const summary = await this.api.group(ref.group, this.listLimit, this.groupIds === null);
        if (seq !== this.seq) {
          return;
        }
        if (summary.task_ids) {
          this.groupIds = new Set(summary.task_ids);
        }
        this.tasks = summary.tasks.filter(t => t.status); // a deleted one reads {id, status: null}
        this.counts = summary.counts;
        this.total = summary.count;
        this.done = summary.done;
        this.gone = summary.gone;
      } else {
        const ids = ref.task_ids ?? [];
        const tasks = ids.length === 1 ? [await this.api.get(ids[0])] : await this.api.tasksById(ids);
        if (seq !== this.seq) {
          return;
        }
        const found = tasks.filter(t => t.status);
        this.tasks = found.slice(0, this.listLimit);
        this.counts = {};
        for (const t of tasks) {
          const status = t.status || 'MISSING';
          this.counts[status] = (this.counts[status] || 0) + 1;
        }
        this.total = ids.length;
        this.done = tasks.every(t => isFinal(t.status));
        this.gone = found.length === 0;
      }
      this.error = null;
    } catch (error) {
      if (seq !== this.seq) {
        return;
      }
      // Our API's own 404 (reason "not found"): the task is gone. A bare 404 means no queue here at all.
      if (error instanceof ApiError && error.status === 404 && error.reason === 'not found') {
        this.gone = true;
        this.done = true;
        this.tasks = [];
        this.error = null;
      } else {
        this.error = (error as Error).message;
      }
    }
    this.loaded = true;
    this.emit();
    if (this.logOpen && this.task?.status === 'RUNNING' && !this.logTail.following) {
      void this.readLog();
    }
    const complete = this.task ? [this.task] : this.tasks.filter(t => this.expanded.has(t.id));
    await Promise.all(complete.filter(t => t.status === 'COMPLETE').map(t => this.readDisplay(t.id)));
  }

  /**
   * Shows or hides a group row's result (its task must be COMPLETE to have one). The result is read on
   * the first showing only: a 2,000-task group reads the results someone looks at, no others.
   */
  toggleResult(taskId: string): Promise<void> {
    if (this.expanded.has(taskId)) {
      this.expanded.delete(taskId);
      this.emit();
      return Promise.resolve();
    }
    this.expanded.add(taskId);
    this.emit();
    const task = this.tasks.find(t => t.id === taskId);
    return task?.status === 'COMPLETE' ? this.readDisplay(taskId) : Promise.resolve();
  }

  /** Reads the result's display bundle of a COMPLETE task, once (the result never changes). */
  private async readDisplay(taskId: string): Promise<void> {
    if (this.displays.has(taskId)) {
      return;
    }
    this.displays.set(taskId, { ...NO_DISPLAY, loading: true });
    let answer: ResultDisplay;
    try {
      answer = { bundle: await this.api.display(taskId), error: null, loading: false };
    } catch (error) {
      // 410: the result expired; 404 from an older server: no display there. Say so, quietly.
      const message =
        error instanceof ApiError && error.status === 410
          ? 'The result has expired.'
          : error instanceof ApiError && error.status === 404 && error.reason !== 'not found'
            ? null
            : (error as Error).message;
      answer = { bundle: null, error: message, loading: false };
    }
    if (this.disposed) {
      return;
    }
    this.displays.set(taskId, answer);
    this.emit();
  }

  private async act(what: () => Promise<string>): Promise<void> {
    this.busy = true;
    this.emit();
    try {
      this.message = await what();
    } catch (error) {
      this.message = (error as Error).message;
    } finally {
      this.busy = false;
      await this.refresh();
    }
  }

  /** Cancels every task of the output that can still be cancelled. */
  cancel(): Promise<void> {
    return this.act(async () => {
      const ids = this.ref.task_ids ?? (await this.allGroupIds());
      const answer = await this.api.cancel(ids);
      if (this.isSingle) {
        return answer.cancelled.length ? 'cancel requested' : `not cancelled: ${answer.not_cancelled[0]?.reason ?? ''}`;
      }
      return `cancelled ${answer.cancelled.length}`;
    });
  }

  /** Retries the (single, finished) task: the output follows the new task from now on. */
  retry(): Promise<void> {
    return this.act(async () => {
      const old = this.task;
      if (!old) {
        return 'nothing to retry';
      }
      const fresh = await this.api.retry(old.id);
      this.ref = { ...this.ref, task_ids: [fresh.id] };
      this.tasks = [fresh];
      this.logTail.reset();
      this.refListeners.forEach(l => l(this.ref));
      return `retried as ${fresh.id}`;
    });
  }

  private async allGroupIds(): Promise<string[]> {
    if (!this.groupIds) {
      const summary = await this.api.group(this.ref.group!, 0, true);
      this.groupIds = new Set(summary.task_ids ?? []);
    }
    return [...this.groupIds];
  }

  // -- the log of a single task, read while its section is open --------------
  setLogOpen(open: boolean): void {
    this.logOpen = open;
    if (open) {
      void this.readLog();
    } else {
      this.logTail.stop();
    }
  }

  async readLog(): Promise<void> {
    const task = this.task;
    if (!task || this.disposed) {
      return;
    }
    await this.logTail.read(
      offset => this.api.logs(task.id, offset),
      () => this.task?.id === task.id && !this.disposed,
      () => this.logOpen && !this.disposed
    );
  }

  dispose(): void {
    this.disposed = true;
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.logTail.stop();
    this.listeners.clear();
    this.refListeners.clear();
  }
}

// -- the bundle's text and HTML fallbacks, rewritten with the final known state -------------------

/** Tasks a group's HTML fallback lists (as the kernel's: jupyter_taskq/taskline.py). */
export const FALLBACK_LIST_LIMIT = LIST_LIMIT;

/** The task's one line (taskline.ts); a list line cuts the error message to `errorChars`. */
export function taskText(task: Task, errorChars = Infinity): string {
  return taskLine(task, errorChars);
}

export function groupText(total: number, counts: Record<string, number>): string {
  const parts = Object.keys(counts)
    .sort()
    .map(s => `${counts[s]} ${s}`);
  return `${total} tasks: ${parts.join(', ')}`;
}

const escapeHtml = (text: string) =>
  text.replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#x27;' })[c]!);

/** `text/plain` and `text/html` saying what the output knows now (null before the first read). */
export function fallbacks(model: TaskOutputModel): { text: string; html: string } | null {
  if (!model.loaded || model.error) {
    return null;
  }
  if (model.gone) {
    const text = model.isSingle ? `Task ${model.ref.task_ids![0]} no longer exists` : `${model.total} tasks: all deleted`;
    return { text, html: `<div class='jtq-summary'><code>${escapeHtml(text)}</code></div>` };
  }
  const task = model.task;
  if (task) {
    const text = taskText(task);
    const tb = task.error?.traceback && task.status !== 'COMPLETE' ? `<pre>${escapeHtml(task.error.traceback)}</pre>` : '';
    return { text, html: `<div class='jtq-summary'><code>${escapeHtml(text)}</code>${tb}</div>` };
  }
  const text = groupText(model.total, model.counts);
  const listed = model.tasks.slice(0, FALLBACK_LIST_LIMIT);
  const shown = model.total > listed.length ? `<p>showing ${listed.length} of ${model.total} tasks</p>` : '';
  const items = listed.map(t => `<li><code>${escapeHtml(taskText(t, LIST_ERROR_CHARS))}</code></li>`).join('');
  return { text, html: `<div><b>${escapeHtml(text)}</b>${shown}<ul>${items}</ul></div>` };
}
