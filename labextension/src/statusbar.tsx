/** The status bar item "N running · M queued (· K failed)"; a click opens the panel. */

import { ReactWidget } from '@jupyterlab/apputils';
import * as React from 'react';

import { failureCount, statusBarText } from './format';
import type { QueueModel } from './model';

function StatusText({ model }: { model: QueueModel }): JSX.Element {
  const [, setVersion] = React.useState(0);
  React.useEffect(() => model.subscribe(() => setVersion(v => v + 1)), [model]);
  const unseen = failureCount(model.stats) - (model.seenFailures ?? failureCount(model.stats));
  return (
    <span className={`jtqp-status-text${unseen > 0 ? ' jtqp-status-failed' : ''}`}>
      {statusBarText(model.stats, model.seenFailures)}
    </span>
  );
}

export class QueueStatusItem extends ReactWidget {
  constructor(
    private readonly model: QueueModel,
    open: () => void
  ) {
    super();
    this.addClass('jtqp-statusbar');
    this.addClass('jp-mod-highlighted');
    this.node.title = 'Task queue: click to open the Task Queue panel';
    this.node.tabIndex = 0;
    this.node.setAttribute('role', 'button');
    this.node.addEventListener('click', open);
    this.node.addEventListener('keydown', e => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        open();
      }
    });
  }

  render(): JSX.Element {
    return <StatusText model={this.model} />;
  }
}
