/**
 * Telling the user when tasks submitted from this Lab finish while they look elsewhere. It listens to
 * the panel's change feed, reads the changed tasks, and reports those that ended since the page
 * loaded and came from a notebook open in this Lab (a task records its notebook and cell), unless
 * that notebook is the one in front or is muted. Tasks ending together in one notebook make one
 * notice (a 2,000-task map is one line, not 2,000). It imports nothing from JupyterLab (unit-tested
 * in Node); the plugin turns notices into JupyterLab notifications.
 */

import type { TaskqApi } from './api';
import type { ChangeSource } from './outputmodel';
import { FINAL, type Task } from './types';

export interface Notice {
  kind: 'success' | 'error';
  message: string;
  /** The notebook as the task recorded it, and the first finished task (for "Open" and "Go to cell"). */
  notebook: string;
  taskId: string;
  cellId: string | null;
}

export interface NotifierOptions {
  /** The recorded notebook (a file path) of a notebook open in this Lab: its server path, else null. */
  openNotebook: (recorded: string) => string | null;
  /** False while no notebook is open: then nothing is read at all. */
  anyOpen?: () => boolean;
  /** True for the notebook (server path) the user is looking at: no notice for it. */
  inFront: (path: string) => boolean;
  notify: (notice: Notice) => void;
  storage?: { getItem(key: string): string | null; setItem(key: string, value: string): void } | null;
  /** When the page loaded (ms): tasks that ended before are old news. */
  since?: number;
  /** Ids read at most per change (the rest are skipped: a notice is a courtesy, not a log). */
  maxRead?: number;
}

const ENABLED_KEY = 'jupyter-taskq:notify';
const MUTED_KEY = 'jupyter-taskq:muted-notebooks';

export class FinishNotifier {
  private readonly told = new Set<string>();
  private readonly since: number;
  private unsubscribe: (() => void) | null = null;

  constructor(
    private readonly api: Pick<TaskqApi, 'tasksById'>,
    private readonly options: NotifierOptions
  ) {
    this.since = options.since ?? Date.now();
  }

  get enabled(): boolean {
    return this.options.storage?.getItem(ENABLED_KEY) !== 'off';
  }

  set enabled(on: boolean) {
    this.options.storage?.setItem(ENABLED_KEY, on ? 'on' : 'off');
  }

  muted(path: string): boolean {
    return this.mutedSet().has(path);
  }

  setMuted(path: string, muted: boolean): void {
    const set = this.mutedSet();
    if (muted) {
      set.add(path);
    } else {
      set.delete(path);
    }
    this.options.storage?.setItem(MUTED_KEY, JSON.stringify([...set]));
  }

  private mutedSet(): Set<string> {
    try {
      return new Set(JSON.parse(this.options.storage?.getItem(MUTED_KEY) || '[]'));
    } catch {
      return new Set();
    }
  }

  start(changes: ChangeSource): void {
    this.unsubscribe ??= changes.onChange(changed => void this.onChanges(changed));
  }

  dispose(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  /** Reads the changed tasks and notifies about those that just finished. */
  async onChanges(changed: string[] | null): Promise<void> {
    if (!changed || !changed.length || !this.enabled || (this.options.anyOpen && !this.options.anyOpen())) {
      return;
    }
    const ids = changed.filter(id => !this.told.has(id)).slice(0, this.options.maxRead ?? 500);
    if (!ids.length) {
      return;
    }
    let tasks: Task[];
    try {
      tasks = await this.api.tasksById(ids);
    } catch {
      return; // the panel shows connection problems; a missed notice is no error
    }
    this.report(tasks);
  }

  /** Groups newly finished tasks per notebook and emits one notice for each. */
  report(tasks: Task[]): void {
    const byNotebook = new Map<string, Task[]>();
    for (const task of tasks) {
      if (!task.status || !FINAL.includes(task.status) || this.told.has(task.id)) {
        continue;
      }
      const ended = task.ended_at ? Date.parse(task.ended_at) : NaN;
      if (!(ended >= this.since) || !task.notebook) {
        continue;
      }
      const path = this.options.openNotebook(task.notebook);
      if (path === null || this.muted(path) || this.options.inFront(path)) {
        continue;
      }
      this.told.add(task.id);
      const list = byNotebook.get(task.notebook) ?? [];
      list.push(task);
      byNotebook.set(task.notebook, list);
    }
    for (const [notebook, finished] of byNotebook) {
      this.options.notify(notice(notebook, finished));
    }
  }
}

/** "Task nap finished in analysis.ipynb", or "3 tasks finished in analysis.ipynb: 2 COMPLETE, 1 FAILED". */
export function notice(notebook: string, finished: Task[]): Notice {
  const failed = finished.filter(t => t.status !== 'COMPLETE');
  const where = notebook.split(/[\\/]/).pop();
  const first = failed[0] ?? finished[0];
  let message: string;
  if (finished.length === 1) {
    const task = finished[0];
    const name = task.name || task.id.slice(0, 8);
    message =
      task.status === 'COMPLETE'
        ? `Task ${name} finished in ${where}.`
        : `Task ${name} ${task.status} in ${where}${task.error ? `: ${task.error.type}: ${firstLine(task.error.message)}` : ''}`;
  } else {
    const counts: Record<string, number> = {};
    finished.forEach(t => (counts[t.status] = (counts[t.status] || 0) + 1));
    const parts = Object.keys(counts)
      .sort()
      .map(s => `${counts[s]} ${s}`);
    const firstError = failed.find(t => t.error)?.error;
    message = `${finished.length} tasks finished in ${where}: ${parts.join(', ')}`;
    if (firstError) {
      message += ` (first error: ${firstError.type}: ${firstLine(firstError.message)})`;
    }
  }
  return {
    kind: failed.length ? 'error' : 'success',
    message,
    notebook,
    taskId: first.id,
    cellId: first.cell_id ?? null
  };
}

function firstLine(text: string): string {
  const line = (text || '').split('\n')[0];
  return line.length > 160 ? `${line.slice(0, 160)}…` : line;
}
