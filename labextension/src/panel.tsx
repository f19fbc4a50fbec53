/**
 * The "Task Queue" sidebar: a ReactWidget over the QueueModel. It tells the model when it is shown
 * or hidden (the table is fetched only while visible) and re-renders once a second while tasks run,
 * so durations tick without asking the server.
 */

import { ReactWidget } from '@jupyterlab/apputils';
import type { Message } from '@lumino/messaging';
import * as React from 'react';

import { type Confirm, DetailView, ErrorBanner, QueueHeader, SchedulesView, TaskTable, Toolbar } from './components';
import { useClock, useModel } from './hooks';
import type { QueueModel } from './model';

function QueueView({ model, confirm }: { model: QueueModel; confirm: Confirm }): JSX.Element {
  useModel(model);
  const ticking =
    model.isVisible &&
    Boolean(model.stats?.workers.some(w => w.busy) || model.page?.tasks.some(t => t.status === 'RUNNING'));
  const now = useClock(ticking);
  const props = { model, confirm, now };
  return (
    <div className="jtqp-body">
      <div className="jtqp-title">Task Queue</div>
      <QueueHeader
        stats={model.stats}
        now={now}
        onOpen={id => void model.openDetail(id)}
        onDropWarm={() => void model.dropWarm()}
      />
      <ErrorBanner
        message={model.unavailable ?? model.error}
        onDismiss={() => {
          model.error = null;
          model.refresh();
        }}
      />
      <ErrorBanner message={model.feedError && !model.unavailable ? `Live updates paused: ${model.feedError}` : null} />
      {model.unavailable ? null : model.detailId ? (
        <DetailView {...props} />
      ) : model.showSchedules ? (
        <SchedulesView {...props} />
      ) : (
        <>
          <Toolbar {...props} />
          <button className="jtqp-button jtqp-schedules-button" onClick={() => void model.toggleSchedules(true)}>
            Schedules…
          </button>
          <TaskTable {...props} />
        </>
      )}
    </div>
  );
}

export class QueuePanel extends ReactWidget {
  constructor(
    readonly model: QueueModel,
    private readonly confirm: Confirm
  ) {
    super();
    this.addClass('jtqp-panel');
  }

  render(): JSX.Element {
    return <QueueView model={this.model} confirm={this.confirm} />;
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.setVisible(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.setVisible(false);
  }

  protected onActivateRequest(msg: Message): void {
    super.onActivateRequest(msg);
    // Keyboard users land in the panel, not on the sidebar tab; on first show React renders a moment later.
    const focus = (tries: number) => {
      const target = this.node.querySelector<HTMLElement>('.jtqp-back, .jtqp-text-filter');
      if (target) {
        target.focus();
      } else if (tries > 0) {
        setTimeout(() => focus(tries - 1), 50);
      }
    };
    focus(20);
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }
}
