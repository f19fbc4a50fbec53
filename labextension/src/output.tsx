/**
 * The renderer of `application/vnd.jupyter-taskq.tasks+json`: a task output that lives in the front
 * end. It shows a TaskOutputModel (status, attempt, progress, log tail, downloads, error, Cancel and
 * Retry) and keeps the output's text/HTML fallbacks at the final known state, so the saved notebook
 * says how its tasks ended wherever our extension is absent.
 *
 * Ranked ahead of the ipywidgets renderer (rank -10): in Lab this output is drawn, the kernel's
 * widget is not, and no kernel thread polls. It is a "safe" renderer (it shows in untrusted
 * notebooks too, e.g. one run by nbclient): it only ever reads our own API paths on its own, and
 * acts (Cancel, Retry) only on a click.
 */

import { ReactWidget } from '@jupyterlab/apputils';
import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import * as React from 'react';

import type { TaskqApi } from './api';
import { StatusChip } from './components';
import { attemptLabel, formatBytes, formatDuration, progressFraction, taskDuration } from './format';
import { useClock, useModel } from './hooks';
import {
  type ChangeSource,
  type ResultDisplay,
  TASKS_MIME,
  type TaskRef,
  TaskOutputModel,
  fallbacks,
  parseRef
} from './outputmodel';
import type { Task } from './types';

export const OUTPUT_RANK = -20;

export interface OutputServices {
  api: TaskqApi;
  changes: ChangeSource;
  /** Opens a task in the sidebar's detail view. */
  openTask: (taskId: string) => void;
}

function Progress({ task }: { task: Task }): JSX.Element | null {
  const fraction = progressFraction(task);
  const p = task.progress;
  if (!p || task.status === 'COMPLETE') {
    return null;
  }
  const label = p.total ? `${p.done} / ${p.total}` : `${p.done}`;
  return (
    <div className="jtq-progress-row">
      {fraction !== null && <progress className="jtq-progress" max={1} value={fraction} />}
      <span className="jtq-facts">{p.message ? `${label} · ${p.message}` : label}</span>
    </div>
  );
}

const asText = (value: unknown): string | null =>
  typeof value === 'string' ? value : Array.isArray(value) && value.every(v => typeof v === 'string') ? value.join('') : null;

/** The task's own HTML, sanitised by JupyterLab's sanitizer (it is untrusted: it comes from the task). */
function SafeHtml({ html, sanitizer }: { html: string; sanitizer: IRenderMime.ISanitizer }): JSX.Element {
  const clean = React.useMemo(() => sanitizer.sanitize(html), [html, sanitizer]);
  return <div className="jtq-result-html jp-RenderedHTMLCommon" dangerouslySetInnerHTML={{ __html: clean }} />;
}

/**
 * A COMPLETE task's result, as the worker's IPython formatter showed it: HTML (sanitised), a PNG
 * or JPEG image, else its text. Nothing for a result with no display (None).
 */
export function ResultView({ result, sanitizer }: { result: ResultDisplay; sanitizer?: IRenderMime.ISanitizer }): JSX.Element | null {
  if (result.error) {
    return <div className="jtq-result jtq-facts">Result: {result.error}</div>;
  }
  const data = result.bundle?.data;
  if (!data) {
    return result.loading ? <div className="jtq-result jtq-facts">Reading the result…</div> : null;
  }
  const html = asText(data['text/html']);
  let body: JSX.Element | null = null;
  if (html && sanitizer) {
    body = <SafeHtml html={html} sanitizer={sanitizer} />;
  } else {
    for (const mime of ['image/png', 'image/jpeg']) {
      const b64 = asText(data[mime]);
      if (b64) {
        body = <img className="jtq-result-image" alt="task result" src={`data:${mime};base64,${b64.replace(/\s+/g, '')}`} />;
        break;
      }
    }
    const text = asText(data['text/plain']);
    if (!body && text !== null) {
      body = <pre className="jtq-result-text">{text}</pre>;
    }
  }
  if (!body) {
    return null;
  }
  return (
    <div className="jtq-result" data-mime={html && sanitizer ? 'text/html' : undefined}>
      {body}
    </div>
  );
}

function TaskBody({ model, task, now }: { model: TaskOutputModel; task: Task; now: number }): JSX.Element {
  const facts: string[] = [];
  if (task.attempt) {
    facts.push(`attempt ${task.attempt} of ${task.max_retries + 1}`);
  }
  if (task.worker) {
    facts.push(task.gpu ? `on ${task.worker} (GPU)` : `on ${task.worker}`);
  }
  const took = formatDuration(taskDuration(task, now));
  if (took) {
    facts.push(took);
  }
  return (
    <div className="jtq-body">
      <div className="jtq-facts">{facts.join(' · ')}</div>
      {task.error && task.status !== 'COMPLETE' && (
        <details className="jtq-error">
          <summary>
            {task.error.type}: {task.error.message}
          </summary>
          {task.error.traceback && <pre className="jtq-traceback">{task.error.traceback}</pre>}
        </details>
      )}
      <Progress task={task} />
      {task.outputs.length > 0 && (
        <div className="jtq-outputs">
          {task.outputs.map(o => (
            <span key={o.name}>
              <a className="jtq-download" href={o.url} download={o.name}>
                ⬇ {o.name}
              </a>
              <span className="jtq-facts"> {formatBytes(o.size)} </span>
            </span>
          ))}
        </div>
      )}
      <details className="jtq-log" onToggle={e => model.setLogOpen((e.currentTarget as HTMLDetailsElement).open)}>
        <summary>Log{task.status === 'RUNNING' ? ' (live)' : ''}</summary>
        <pre className="jtq-log-text">{model.log || '(empty)'}</pre>
      </details>
    </div>
  );
}

interface ViewProps {
  model: TaskOutputModel;
  openTask: (id: string) => void;
  sanitizer?: IRenderMime.ISanitizer;
}

/** A group's rows; a COMPLETE one opens its result below it (read only when opened). */
function GroupBody({ model, openTask, sanitizer }: ViewProps): JSX.Element {
  const shown = model.tasks;
  return (
    <div className="jtq-list">
      {shown.map(t => {
        const open = model.expanded.has(t.id) && t.status === 'COMPLETE';
        return (
          <React.Fragment key={t.id}>
            <div className="jtq-row" data-task-id={t.id}>
              <StatusChip status={t.status} className="jtq-chip" />
              <button className="jtq-link jtq-row-name" title={`${t.id}: open in the Task Queue panel`} onClick={() => openTask(t.id)}>
                {t.name || t.id}
              </button>
              <span className="jtq-facts">
                {t.worker || ''} {t.attempt ? attemptLabel(t) : ''}
              </span>
              {t.status === 'COMPLETE' && (
                <button
                  className="jtq-link jtq-row-result"
                  aria-expanded={open}
                  title={open ? 'Hide the result' : 'Show the result'}
                  onClick={() => void model.toggleResult(t.id)}
                >
                  {open ? '▾ result' : '▸ result'}
                </button>
              )}
            </div>
            {open && (
              <div className="jtq-row-detail" data-task-id={t.id}>
                <ResultView result={model.resultOf(t.id)} sanitizer={sanitizer} />
              </div>
            )}
          </React.Fragment>
        );
      })}
      {model.total > shown.length && (
        <div className="jtq-facts jtq-shown">
          showing {shown.length} of {model.total} tasks
        </div>
      )}
    </div>
  );
}

function OutputView({ model, openTask, sanitizer }: ViewProps): JSX.Element {
  useModel(model);
  const task = model.task;
  const now = useClock(Boolean(task && task.status === 'RUNNING'));
  let head: JSX.Element;
  if (model.gone) {
    const what = model.isSingle ? `Task ${model.ref.task_ids![0]}` : `These ${model.total} tasks`;
    head = <span className="jtq-gone">{what} no longer exist{model.isSingle ? 's' : ''} on this server.</span>;
  } else if (!model.loaded) {
    head = <span className="jtq-facts">Loading…</span>;
  } else if (task) {
    head = (
      <>
        <button className="jtq-link jtq-name" title={`${task.id}: open in the Task Queue panel`} onClick={() => openTask(task.id)}>
          {task.name || task.id}
        </button>
        <StatusChip status={task.status} className="jtq-chip" />
      </>
    );
  } else {
    const finished = Object.entries(model.counts)
      .filter(([s]) => s !== 'PENDING' && s !== 'RUNNING' && s !== 'RETRY')
      .reduce((n, [, c]) => n + c, 0);
    head = (
      <>
        <span className="jtq-name">{model.total} tasks</span>
        {Object.entries(model.counts).map(([status, n]) => (
          <StatusChip key={status} status={status} label={`${n} ${status}`} className="jtq-chip" />
        ))}
        <progress className="jtq-progress" max={Math.max(1, model.total)} value={finished} />
      </>
    );
  }
  return (
    <div
      className="jtq-widget jtqo-output"
      data-status={task?.status ?? (model.done ? 'done' : 'live')}
      data-task-id={task?.id}
      data-group-id={model.ref.group}
    >
      <div className="jtq-head">{head}</div>
      {task && !model.gone && task.status === 'COMPLETE' && <ResultView result={model.resultOf(task.id)} sanitizer={sanitizer} />}
      {task && !model.gone && <TaskBody model={model} task={task} now={now} />}
      {!task && !model.gone && model.loaded && <GroupBody model={model} openTask={openTask} sanitizer={sanitizer} />}
      {model.error && <div className="jtq-error-line">{model.error}</div>}
      {model.message && <div className="jtq-message">{model.message}</div>}
      {!model.gone && model.loaded && (
        <div className="jtq-actions">
          {model.canCancel && (
            <button className="jtq-button jtq-cancel" disabled={model.busy} onClick={() => void model.cancel()}>
              {model.isSingle ? 'Cancel' : 'Cancel all'}
            </button>
          )}
          {model.canRetry && (
            <button className="jtq-button jtq-retry" disabled={model.busy} onClick={() => void model.retry()}>
              Retry
            </button>
          )}
        </div>
      )}
    </div>
  );
}

const sameRef = (a: TaskRef, b: TaskRef) =>
  a.group === b.group && JSON.stringify(a.task_ids ?? null) === JSON.stringify(b.task_ids ?? null);

/** One output's widget: follows its model, and writes the final state back into the output's fallbacks. */
export class TaskOutputRenderer extends ReactWidget implements IRenderMime.IRenderer {
  private model: TaskOutputModel | null = null;
  private mimeModel: IRenderMime.IMimeModel | null = null;
  private invalid: string | null = null;

  constructor(
    private readonly services: OutputServices,
    /** JupyterLab's HTML sanitizer (from the renderer's options): the result's HTML is the task's. */
    private readonly sanitizer?: IRenderMime.ISanitizer
  ) {
    super();
    this.addClass('jtqo-renderer');
  }

  async renderModel(mimeModel: IRenderMime.IMimeModel): Promise<void> {
    this.mimeModel = mimeModel;
    const ref = parseRef(mimeModel.data[TASKS_MIME]);
    if (!ref) {
      this.invalid = 'This task output names no task this version of jupyter-taskq can read.';
      this.update();
      return;
    }
    if (!this.model || !sameRef(this.model.ref, ref)) {
      this.model?.dispose();
      const model = (this.model = new TaskOutputModel(this.services.api, this.services.changes, ref));
      model.onRefChange(() => this.saveState());
      model.subscribe(() => {
        if (model.done) {
          this.saveState();
        }
      });
      this.update();
      await model.start();
    }
  }

  /** The output's bundle names the tasks shown now, and its fallbacks say their state (once final). */
  private saveState(): void {
    const model = this.model;
    const mimeModel = this.mimeModel;
    if (!model || !mimeModel) {
      return;
    }
    const data = { ...(mimeModel.data as Record<string, unknown>) };
    const ref = parseRef(data[TASKS_MIME]);
    let changed = false;
    if (!ref || !sameRef(ref, model.ref)) {
      data[TASKS_MIME] = { ...(data[TASKS_MIME] as object), ...model.ref } as unknown;
      changed = true;
    }
    const texts = model.done ? fallbacks(model) : null;
    if (texts && (data['text/plain'] !== texts.text || data['text/html'] !== texts.html)) {
      data['text/plain'] = texts.text;
      data['text/html'] = texts.html;
      changed = true;
    }
    if (changed) {
      mimeModel.setData({ data: data as IRenderMime.IMimeModel['data'] });
    }
  }

  render(): JSX.Element {
    if (this.invalid || !this.model) {
      return <div className="jtq-widget jtqo-output jtq-facts">{this.invalid ?? 'Loading…'}</div>;
    }
    return <OutputView model={this.model} openTask={this.services.openTask} sanitizer={this.sanitizer} />;
  }

  dispose(): void {
    this.model?.dispose();
    this.model = null;
    super.dispose();
  }
}

export function outputRendererFactory(services: OutputServices): IRenderMime.IRendererFactory {
  return {
    safe: true,
    mimeTypes: [TASKS_MIME],
    defaultRank: OUTPUT_RANK,
    createRenderer: options => new TaskOutputRenderer(services, options.sanitizer)
  };
}
