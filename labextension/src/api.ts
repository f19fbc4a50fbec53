/**
 * The REST client for `{base_url}taskq/api/`. It takes a `Fetcher` instead of calling
 * `ServerConnection` itself, so the plugin wires in `ServerConnection.makeRequest` (base URL, token,
 * XSRF right under JupyterHub too) and the unit tests wire in a fake.
 */

import type { ScheduleChanges } from './scheduleedit';
import type { Attempt, CancelAnswer, CellCounts, Changes, DisplayBundle, GroupSummary, LogChunk, Schedule, Stats, Task, TaskPage } from './types';

/** Makes one request to a path relative to `taskq/api/`. */
export type Fetcher = (path: string, init?: RequestInit) => Promise<Response>;

/** An API failure with a message a person can read (shown in the panel, never a blank one). */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number | null = null,
    readonly reason: string | null = null,
    /** The server's own message (its JSON `message`), for a form that shows why its input was refused. */
    readonly detail: string | null = null
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export interface ListQuery {
  statuses?: string[];
  text?: string;
  limit?: number;
  offset?: number;
  /** Only this owner's tasks (a hub admin's "Mine"); none: everyone's the caller may see. */
  owner?: string | null;
}

/** The query string of `GET tasks` (empty parts left out, so equal queries give equal URLs). */
export function listPath(query: ListQuery): string {
  const params = new URLSearchParams();
  if (query.statuses && query.statuses.length) {
    params.set('status', query.statuses.join(','));
  }
  const text = (query.text || '').trim();
  if (text) {
    params.set('q', text);
  }
  if (query.owner) {
    params.set('owner', query.owner);
  }
  params.set('limit', String(query.limit ?? 50));
  params.set('offset', String(query.offset ?? 0));
  return `tasks?${params.toString()}`;
}

/** Turns any failed response into an ApiError whose message says what went wrong. */
export async function errorFrom(response: Response, what: string): Promise<ApiError> {
  let message = '';
  let reason: string | null = null;
  try {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      message = body.message || '';
      reason = body.reason || null;
    } catch {
      message = text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 300);
    }
  } catch {
    // no body to read
  }
  const status = response.status;
  const hint =
    status === 403 || status === 401
      ? ' (is your Jupyter session still logged in?)'
      : status === 404 && !message
        ? ' (is the jupyter_taskq server extension enabled?)'
        : '';
  return new ApiError(
    `${what} failed: ${status} ${message || response.statusText || 'error'}${hint}`,
    status,
    reason,
    message || null
  );
}

export class TaskqApi {
  constructor(private readonly fetcher: Fetcher) {}

  private async call<T>(what: string, path: string, init?: RequestInit): Promise<T> {
    let response: Response;
    try {
      response = await this.fetcher(path, init);
    } catch (error) {
      if (init?.signal?.aborted || (error as Error)?.name === 'AbortError') {
        // ServerConnection wraps an abort as a NetworkError: give it back its name.
        const aborted = new Error('aborted');
        aborted.name = 'AbortError';
        throw aborted;
      }
      throw new ApiError(
        `${what} failed: the Jupyter server did not answer (${(error as Error)?.message || error})`
      );
    }
    if (!response.ok) {
      throw await errorFrom(response, what);
    }
    if (response.status === 204) {
      return undefined as T;
    }
    return (await response.json()) as T;
  }

  private post<T>(what: string, path: string, body?: unknown): Promise<T> {
    return this.call<T>(what, path, {
      method: 'POST',
      body: body === undefined ? undefined : JSON.stringify(body),
      headers: { 'Content-Type': 'application/json' }
    });
  }

  list(query: ListQuery, signal?: AbortSignal): Promise<TaskPage> {
    return this.call('Listing tasks', listPath(query), { signal });
  }

  /**
   * Every task submitted from one notebook, counted by cell and status (`GET tasks?notebook=`): `paths`
   * are the ways the notebook may be recorded (the kernel records its file-system path).
   */
  cellCounts(paths: string[]): Promise<CellCounts> {
    const params = new URLSearchParams();
    paths.forEach(p => params.append('notebook', p));
    return this.call('Reading the notebook\'s tasks', `tasks?${params.toString()}`);
  }

  get(taskId: string): Promise<Task> {
    return this.call('Reading the task', `tasks/${encodeURIComponent(taskId)}`);
  }

  /** Several tasks by id, in that order (a deleted one reads `{id, status: null}`). */
  async tasksById(taskIds: string[]): Promise<Task[]> {
    const answer = await this.post<{ tasks: Task[] }>('Reading the tasks', 'tasks/wait', { task_ids: taskIds, timeout: 0 });
    return answer.tasks;
  }

  /** A group registered by the kernel: counts, done, its first `limit` tasks (and every id with `withIds`). */
  group(groupId: string, limit: number, withIds = false): Promise<GroupSummary> {
    const params = new URLSearchParams({ limit: String(limit) });
    if (withIds) {
      params.set('ids', '1');
    }
    return this.call('Reading the task group', `groups/${encodeURIComponent(groupId)}?${params.toString()}`);
  }

  async attempts(taskId: string): Promise<Attempt[]> {
    const answer = await this.call<{ attempts: Attempt[] }>('Reading the attempts', `tasks/${encodeURIComponent(taskId)}/attempts`);
    return answer.attempts;
  }

  stats(): Promise<Stats> {
    return this.call('Reading queue stats', 'stats');
  }

  /** Asks every worker to end its warm task processes (they go within a heartbeat). */
  dropWarm(): Promise<{ workers_asked: number }> {
    return this.call('Dropping warm processes', 'warm', { method: 'DELETE' });
  }

  /** Long-poll: answers as soon as something changed after `since` (or after `wait` seconds). */
  changes(since: string, wait: number, signal?: AbortSignal): Promise<Changes> {
    const params = new URLSearchParams({ since, wait: String(wait) });
    return this.call('Watching for changes', `changes?${params.toString()}`, { signal });
  }

  cancel(taskIds: string[]): Promise<CancelAnswer> {
    return this.post('Cancelling', 'tasks/cancel', { task_ids: taskIds });
  }

  retry(taskId: string): Promise<Task> {
    return this.post('Retrying', `tasks/${encodeURIComponent(taskId)}/retry`);
  }

  remove(taskId: string): Promise<void> {
    return this.call('Deleting', `tasks/${encodeURIComponent(taskId)}`, { method: 'DELETE' });
  }

  /** The log from `offset`: attempt `attempt`'s own log, or the latest attempt's when none is given. */
  logs(taskId: string, offset: number, attempt?: number | null): Promise<LogChunk> {
    const params = new URLSearchParams({ offset: String(offset) });
    if (attempt !== undefined && attempt !== null) {
      params.set('attempt', String(attempt));
    }
    return this.call('Reading the log', `tasks/${encodeURIComponent(taskId)}/logs?${params.toString()}`);
  }

  /**
   * A COMPLETE task's result as a MIME bundle (409 before it completes, 410 once its result
   * expired). Its HTML comes from the task: the caller renders it sanitised.
   */
  display(taskId: string): Promise<DisplayBundle> {
    return this.call('Reading the result display', `tasks/${encodeURIComponent(taskId)}/display`);
  }

  /** Every schedule the caller may see (a hub user: their own). */
  async schedules(): Promise<Schedule[]> {
    const answer = await this.call<{ schedules: Schedule[] }>('Listing schedules', 'schedules');
    return answer.schedules;
  }

  /** Pause (`{paused: true}`), resume or edit a schedule while it runs. */
  updateSchedule(scheduleId: string, changes: ScheduleChanges & { paused?: boolean }): Promise<Schedule> {
    return this.call('Changing the schedule', `schedules/${encodeURIComponent(scheduleId)}`, {
      method: 'PATCH',
      body: JSON.stringify(changes),
      headers: { 'Content-Type': 'application/json' }
    });
  }

  /** No more runs; those made stay as tasks. */
  deleteSchedule(scheduleId: string): Promise<void> {
    return this.call('Deleting the schedule', `schedules/${encodeURIComponent(scheduleId)}`, { method: 'DELETE' });
  }

  /**
   * Cancels every waiting task, a page at a time (the list shifts as tasks leave it, so it always
   * reads the first page again); stops when a round cancels nothing.
   */
  async cancelAllWaiting(pageSize = 1000): Promise<number> {
    let total = 0;
    for (;;) {
      const page = await this.list({ statuses: ['PENDING', 'RETRY'], limit: pageSize, offset: 0 });
      if (!page.tasks.length) {
        return total;
      }
      const answer = await this.cancel(page.tasks.map(t => t.id));
      total += answer.cancelled.length;
      if (!answer.cancelled.length) {
        return total;
      }
    }
  }
}
