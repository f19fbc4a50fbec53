/**
 * A small mark on the prompt of every cell that has tasks (issue 14): tasks record the notebook and
 * cell they came from (`notebook`, `cell_id`), as "Go to cell" uses them. The marks come from the most
 * recent tasks (one page of `GET tasks`, read when the change feed says something changed and a
 * notebook is open), so a cell whose tasks are all older than that page shows none.
 * The DOM side is typed by what it uses of a notebook panel, as in gotocell.ts, so the plugin does
 * not depend on @jupyterlab/notebook.
 */

import type { TaskqApi } from './api';
import { serverPath } from './format';
import type { Task, TaskStatus } from './types';
import { FAILURES, WAITING } from './types';

/** How many of the latest tasks the marks are computed from. */
export const CELL_MARK_WINDOW = 500;

export interface CellMark {
  count: number;
  active: number; // waiting or running
  failed: number; // failed or timed out
}

export const CELL_CLASS = 'jtq-cell-has-tasks';

/** The marks of the notebook at `path` (server-relative), by cell id, from tasks recorded anywhere. */
export function cellMarks(tasks: Pick<Task, 'notebook' | 'cell_id' | 'status'>[], path: string, serverRoot: string): Map<string, CellMark> {
  const marks = new Map<string, CellMark>();
  for (const task of tasks) {
    if (!task.notebook || !task.cell_id || serverPath(task.notebook, serverRoot) !== path) {
      continue;
    }
    const mark = marks.get(task.cell_id) ?? { count: 0, active: 0, failed: 0 };
    mark.count += 1;
    if (task.status === 'RUNNING' || WAITING.includes(task.status as TaskStatus)) {
      mark.active += 1;
    } else if (FAILURES.includes(task.status as TaskStatus)) {
      mark.failed += 1;
    }
    marks.set(task.cell_id, mark);
  }
  return marks;
}

/** The state a mark shows: running first, then failed, else done. */
export function markState(mark: CellMark): 'active' | 'failed' | 'done' {
  return mark.active ? 'active' : mark.failed ? 'failed' : 'done';
}

export function markTitle(mark: CellMark): string {
  const parts = [`${mark.count} task${mark.count === 1 ? '' : 's'} from this cell`];
  if (mark.active) {
    parts.push(`${mark.active} waiting or running`);
  }
  if (mark.failed) {
    parts.push(`${mark.failed} failed`);
  }
  return parts.join(', ');
}

interface CellLike {
  model: { id: string };
  node: HTMLElement;
}

export interface NotebookPanelLike {
  context: { path: string };
  content: { widgets: readonly CellLike[] };
}

/** Puts (or takes off) the mark on every cell of one open notebook. */
export function applyMarks(panel: NotebookPanelLike, marks: Map<string, CellMark>): void {
  for (const cell of panel.content.widgets) {
    const mark = marks.get(cell.model.id);
    const node = cell.node;
    if (mark) {
      node.classList.add(CELL_CLASS);
      node.dataset.taskqTasks = String(mark.count);
      node.dataset.taskqState = markState(mark);
      node.title = markTitle(mark);
    } else if (node.classList.contains(CELL_CLASS)) {
      node.classList.remove(CELL_CLASS);
      delete node.dataset.taskqTasks;
      delete node.dataset.taskqState;
      node.removeAttribute('title');
    }
  }
}

/**
 * Keeps the marks of every open notebook current: `openNotebooks` lists them, `refresh` is called on
 * each change of the feed and when a notebook opens. Reads nothing while no notebook is open.
 */
export class CellMarker {
  private tasks: Task[] = [];
  private reading: Promise<void> | null = null;
  private seen = new Set<string>();

  constructor(
    private readonly api: TaskqApi,
    private readonly openNotebooks: () => NotebookPanelLike[],
    private readonly serverRoot: () => string
  ) {}

  /** Reads the latest tasks again (one request at a time) and marks every open notebook. */
  async refresh(): Promise<void> {
    if (!this.openNotebooks().length) {
      return;
    }
    if (!this.reading) {
      this.reading = this.api
        .list({ limit: CELL_MARK_WINDOW, offset: 0 })
        .then(page => {
          this.tasks = page.tasks;
        })
        .catch(() => undefined) // the panel shows API errors; a mark missing a moment is no harm
        .finally(() => {
          this.reading = null;
        });
    }
    await this.reading;
    this.seen = new Set(this.openNotebooks().map(p => p.context.path)); // marked now: apply() need not read again
    this.apply();
  }

  /** Marks the open notebooks from the tasks already read (cells added); a newly opened one reads afresh. */
  apply(): void {
    const root = this.serverRoot();
    const panels = this.openNotebooks();
    const paths = new Set(panels.map(p => p.context.path));
    const opened = [...paths].some(p => !this.seen.has(p));
    this.seen = paths;
    for (const panel of panels) {
      applyMarks(panel, cellMarks(this.tasks, panel.context.path, root));
    }
    if (opened && !this.reading) {
      void this.refresh();
    }
  }
}
