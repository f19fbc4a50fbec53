/**
 * A small mark on the prompt of every cell that has tasks (issue 14): tasks record the notebook and
 * cell they came from (`notebook`, `cell_id`), as "Go to cell" uses them. The marks come from every
 * task of the open notebook, however many newer tasks other notebooks have: the server counts them by
 * cell and status (`GET tasks?notebook=`, one indexed read), once per open notebook when a notebook
 * opens and when the change feed says something changed.
 * The DOM side is typed by what it uses of a notebook panel, as in gotocell.ts, so the plugin does
 * not depend on @jupyterlab/notebook.
 */

import type { TaskqApi } from './api';
import type { CellCounts, TaskStatus } from './types';
import { FAILURES, WAITING } from './types';

export interface CellMark {
  count: number;
  active: number; // waiting or running
  failed: number; // failed or timed out
}

export const CELL_CLASS = 'jtq-cell-has-tasks';

/**
 * The ways a notebook at server path `path` may be recorded by its kernel: the kernel records its
 * file-system path (`JPY_SESSION_NAME`, the server root joined with the path), an older one the path as is.
 */
export function recordedPaths(path: string, serverRoot: string): string[] {
  const root = serverRoot.replace(/[\\/]+$/, '');
  const paths = [path];
  if (root) {
    paths.push(`${root}/${path}`);
    if (root.includes('\\')) {
      paths.push(`${root}\\${path.replace(/\//g, '\\')}`); // a Windows server
    }
  }
  return paths;
}

/** The marks of one notebook, by cell id, from its tasks counted by cell and status. */
export function cellMarks(counts: CellCounts['cells']): Map<string, CellMark> {
  const marks = new Map<string, CellMark>();
  for (const [cellId, byStatus] of Object.entries(counts)) {
    const mark = { count: 0, active: 0, failed: 0 };
    for (const [status, n] of Object.entries(byStatus)) {
      mark.count += n;
      if (status === 'RUNNING' || WAITING.includes(status as TaskStatus)) {
        mark.active += n;
      } else if (FAILURES.includes(status as TaskStatus)) {
        mark.failed += n;
      }
    }
    if (mark.count) {
      marks.set(cellId, mark);
    }
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
 * each change of the feed and when a notebook opens. Reads nothing while no notebook is open; one
 * request per open notebook per refresh, never one per cell.
 */
export class CellMarker {
  private marks = new Map<string, Map<string, CellMark>>(); // by notebook path
  private reading: Promise<void> | null = null;
  private again = false;
  private seen = new Set<string>();

  constructor(
    private readonly api: TaskqApi,
    private readonly openNotebooks: () => NotebookPanelLike[],
    private readonly serverRoot: () => string
  ) {}

  /** Reads the open notebooks' marks again (one round at a time; a change meanwhile reads once more after). */
  async refresh(): Promise<void> {
    if (!this.openNotebooks().length) {
      return;
    }
    if (this.reading) {
      this.again = true;
      return this.reading;
    }
    this.reading = this.read().finally(() => {
      this.reading = null;
    });
    await this.reading;
    if (this.again) {
      this.again = false;
      await this.refresh();
    }
  }

  private async read(): Promise<void> {
    const root = this.serverRoot();
    const paths = [...new Set(this.openNotebooks().map(p => p.context.path))];
    const marks = new Map<string, Map<string, CellMark>>();
    await Promise.all(
      paths.map(async path => {
        try {
          marks.set(path, cellMarks((await this.api.cellCounts(recordedPaths(path, root))).cells));
        } catch {
          const known = this.marks.get(path); // the panel shows API errors; a mark missing a moment is no harm
          if (known) {
            marks.set(path, known);
          }
        }
      })
    );
    this.marks = marks;
    this.seen = new Set(paths); // marked now: apply() need not read again
    this.apply();
  }

  /** Marks the open notebooks from what was read (cells added); a newly opened one reads afresh. */
  apply(): void {
    const panels = this.openNotebooks();
    const paths = new Set(panels.map(p => p.context.path));
    const opened = [...paths].some(p => !this.seen.has(p));
    this.seen = paths;
    for (const panel of panels) {
      applyMarks(panel, this.marks.get(panel.context.path) ?? new Map());
    }
    if (opened) {
      void this.refresh();
    }
  }
}
