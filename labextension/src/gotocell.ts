/**
 * "Go to cell": opens the notebook a task was submitted from and scrolls to its cell (the task
 * records both: `notebook`, `cell_id`). Typed by what it uses of a notebook panel, so the plugin
 * does not depend on @jupyterlab/notebook.
 */

import type { JupyterFrontEnd } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { PageConfig } from '@jupyterlab/coreutils';

import { serverPath } from './format';

interface CellLike {
  model: { id: string };
}

interface NotebookLike {
  widgets: readonly CellLike[];
  activeCellIndex: number;
  scrollToCell?: (cell: CellLike, align?: 'auto' | 'smart' | 'center' | 'start' | 'end') => Promise<void>;
}

interface NotebookPanelLike {
  id: string;
  content: NotebookLike;
  context: { ready: Promise<void> };
  revealed?: Promise<void>;
}

export const GO_TO_CELL = 'taskq:go-to-cell';

/** True when the cell was found and shown; otherwise the user is told why not. */
export async function goToCell(app: JupyterFrontEnd, recorded: string, cellId: string): Promise<boolean> {
  const path = serverPath(recorded, PageConfig.getOption('serverRoot'));
  let panel: NotebookPanelLike | undefined;
  try {
    panel = (await app.commands.execute('docmanager:open', { path })) as NotebookPanelLike | undefined;
  } catch (error) {
    Notification.error(`Could not open ${path}: ${(error as Error).message}`, { autoClose: 8000 });
    return false;
  }
  if (!panel || !panel.content || !Array.isArray(panel.content.widgets)) {
    Notification.error(`Could not open ${path} as a notebook.`, { autoClose: 8000 });
    return false;
  }
  await panel.context.ready;
  await panel.revealed;
  app.shell.activateById(panel.id);
  const notebook = panel.content;
  const index = notebook.widgets.findIndex(cell => cell.model.id === cellId);
  if (index < 0) {
    Notification.warning(`The cell this task was submitted from is no longer in ${path}.`, { autoClose: 8000 });
    return false;
  }
  notebook.activeCellIndex = index;
  await notebook.scrollToCell?.(notebook.widgets[index], 'center');
  return true;
}
