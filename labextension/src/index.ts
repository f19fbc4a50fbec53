/**
 * jupyter-taskq's JupyterLab plugin: the Task Queue sidebar, the status bar item, palette commands,
 * and the renderer of task outputs in notebooks (output.tsx). One API client and one change-feed
 * long-poll serve them all. All requests go through ServerConnection.makeRequest (base URL, token and
 * XSRF right, under JupyterHub too).
 */

import { ILayoutRestorer, type JupyterFrontEnd, type JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, ICommandPalette, Notification, showDialog } from '@jupyterlab/apputils';
import { PageConfig } from '@jupyterlab/coreutils';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';

import { type Fetcher, TaskqApi } from './api';
import type { Confirm } from './components';
import { serverPath } from './format';
import { queueIcon } from './icon';
import { QueueModel } from './model';
import { FinishNotifier, type Notice } from './notifier';
import { CellMarker, type NotebookPanelLike } from './celltasks';
import { GO_TO_CELL, goToCell } from './gotocell';
import { OUTPUT_RANK, outputRendererFactory } from './output';
import { QueuePanel } from './panel';
import { QueueStatusItem } from './statusbar';

export const PANEL_ID = 'jupyter-taskq-panel';

export namespace CommandIDs {
  export const open = 'taskq:open-panel';
  export const cancelPending = 'taskq:cancel-all-pending';
  export const refresh = 'taskq:refresh';
  export const toggleNotifications = 'taskq:toggle-notifications';
  export const toggleNotebookNotifications = 'taskq:toggle-notebook-notifications';
}

/** A request to `{base_url}taskq/api/<path>` with the page's Jupyter credentials. */
function serverFetcher(): Fetcher {
  const settings = ServerConnection.makeSettings();
  return (path, init) => ServerConnection.makeRequest(`${settings.baseUrl}taskq/api/${path}`, init ?? {}, settings);
}

const confirm: Confirm = async (title, body, action) => {
  const result = await showDialog({
    title,
    body,
    buttons: [Dialog.cancelButton({ label: 'Keep them' }), Dialog.warnButton({ label: action })]
  });
  return result.button.accept;
};

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-taskq-labextension:plugin',
  description: 'The jupyter-taskq Task Queue sidebar, status bar item and commands.',
  autoStart: true,
  optional: [ICommandPalette, IStatusBar, ILayoutRestorer, IRenderMimeRegistry],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null,
    restorer: ILayoutRestorer | null,
    rendermime: IRenderMimeRegistry | null
  ) => {
    const model = new QueueModel(new TaskqApi(serverFetcher()), { storage: window.localStorage });
    const panel = new QueuePanel(model, confirm);
    panel.id = PANEL_ID;
    panel.title.icon = queueIcon;
    panel.title.caption = 'Task Queue';
    panel.title.label = '';
    app.shell.add(panel, 'left', { rank: 650 });
    restorer?.add(panel, PANEL_ID);

    app.commands.addCommand(CommandIDs.open, {
      label: 'Task Queue: Open Panel',
      icon: queueIcon,
      execute: () => app.shell.activateById(PANEL_ID)
    });
    app.commands.addCommand(CommandIDs.cancelPending, {
      label: 'Task Queue: Cancel All Pending Tasks',
      execute: async () => {
        if (await confirm('Cancel all pending tasks', 'Cancel every task that is waiting (PENDING or RETRY)?', 'Cancel all pending')) {
          return model.cancelAllWaiting();
        }
        return 0;
      }
    });
    app.commands.addCommand(GO_TO_CELL, {
      label: 'Task Queue: Go to the Cell a Task Came From',
      execute: args => goToCell(app, String(args.path ?? ''), String(args.cellId ?? ''))
    });
    model.goToCell = (path, cellId) => void app.commands.execute(GO_TO_CELL, { path, cellId });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'Task Queue: Refresh',
      execute: () => model.refresh()
    });
    // Notifications when tasks from a notebook open here finish while the user looks elsewhere.
    const docPath = (w: unknown): string | null => (w as { context?: { path?: string } } | null)?.context?.path ?? null;
    const notifier = new FinishNotifier(model.api, {
      storage: window.localStorage,
      openNotebook: recorded => {
        const path = serverPath(recorded, PageConfig.getOption('serverRoot'));
        return [...app.shell.widgets('main')].some(w => docPath(w) === path) ? path : null;
      },
      anyOpen: () => [...app.shell.widgets('main')].some(w => docPath(w)?.endsWith('.ipynb')),
      inFront: path => document.visibilityState === 'visible' && docPath(app.shell.currentWidget) === path,
      notify: (notice: Notice) => {
        const path = serverPath(notice.notebook, PageConfig.getOption('serverRoot'));
        const actions = [
          {
            label: 'Open',
            caption: 'Show the task in the Task Queue panel',
            callback: () => {
              app.shell.activateById(PANEL_ID);
              void model.openDetail(notice.taskId);
            }
          },
          ...(notice.cellId ? [{ label: 'Go to cell', callback: () => model.goToCell?.(notice.notebook, notice.cellId!) }] : []),
          { label: 'Mute notebook', caption: `No more notices for ${path}`, callback: () => notifier.setMuted(path, true) }
        ];
        const options = { autoClose: notice.kind === 'error' ? (false as const) : 8000, actions };
        if (notice.kind === 'error') {
          Notification.error(notice.message, options);
        } else {
          Notification.success(notice.message, options);
        }
      }
    });
    notifier.start(model.poller);
    app.commands.addCommand(CommandIDs.toggleNotifications, {
      label: 'Task Queue: Notify When My Tasks Finish',
      isToggled: () => notifier.enabled,
      execute: () => {
        notifier.enabled = !notifier.enabled;
      }
    });

    app.commands.addCommand(CommandIDs.toggleNotebookNotifications, {
      label: "Task Queue: Notify About This Notebook's Tasks",
      isEnabled: () => docPath(app.shell.currentWidget)?.endsWith('.ipynb') ?? false,
      isToggled: () => {
        const path = docPath(app.shell.currentWidget);
        return Boolean(path && !notifier.muted(path));
      },
      execute: () => {
        const path = docPath(app.shell.currentWidget);
        if (path) {
          notifier.setMuted(path, !notifier.muted(path));
        }
      }
    });

    for (const command of [
      CommandIDs.open,
      CommandIDs.cancelPending,
      CommandIDs.refresh,
      CommandIDs.toggleNotifications,
      CommandIDs.toggleNotebookNotifications
    ]) {
      palette?.addItem({ command, category: 'Task Queue' });
    }

    if (statusBar) {
      const item = new QueueStatusItem(model, () => app.shell.activateById(PANEL_ID));
      statusBar.registerStatusItem('jupyter-taskq:status', { item, align: 'left', rank: 50 });
    }

    // Task outputs in notebooks: live from the same API client and change feed as the panel.
    rendermime?.addFactory(
      outputRendererFactory({
        api: model.api,
        changes: model.poller,
        openTask: taskId => {
          app.shell.activateById(PANEL_ID);
          void model.openDetail(taskId);
        }
      }),
      OUTPUT_RANK
    );

    // A mark on each cell that has tasks, in every open notebook (celltasks.ts).
    const openNotebooks = (): NotebookPanelLike[] =>
      [...app.shell.widgets('main')].filter(w => {
        const panel = w as unknown as Partial<NotebookPanelLike>;
        return Boolean(panel.context?.path?.endsWith('.ipynb') && Array.isArray(panel.content?.widgets));
      }) as unknown as NotebookPanelLike[];
    const marker = new CellMarker(model.api, openNotebooks, () => PageConfig.getOption('serverRoot'));
    model.poller.onChange(() => void marker.refresh());
    setInterval(() => {
      if (!document.hidden) {
        marker.apply(); // cheap, no request: new cells, a notebook just opened
      }
    }, 1500);

    // One long-poll keeps the status bar (and the panel, while shown) live; none while the tab is hidden.
    const follow = () => (document.hidden ? void model.poller.stop() : model.poller.start());
    document.addEventListener('visibilitychange', follow);
    follow();
  }
};

export default plugin;
