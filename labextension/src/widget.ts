/**
 * The notebook widget: the ESM that anywidget runs for a displayed handle or group where the JupyterLab
 * output renderer is absent (VS Code, Notebook without our extension). It is a second bundle of this source
 * (esbuild, `npm run build:widget`), built on the Lab renderer's own parts: the REST client (api.ts), the
 * output model (outputmodel.ts, with its change-feed following), the formatters and the generated status
 * sets. The kernel's widget state carries only which tasks it shows; the rows come over REST.
 *
 * Two ways to reach the API:
 * - the page's server runs the queue (`api_path` set): requests go from the page with its cookie and XSRF
 *   token, and one long-poll of `GET changes` per page (shared by every widget on it) says what changed, so
 *   the widget stays live and its buttons work while the kernel is busy;
 * - otherwise each request is relayed by the kernel (custom comm messages, never saved state), and a kernel
 *   thread follows the change feed, sending with each change the fresh answers to the reads the widget
 *   makes, so the widget updates while the kernel runs another cell (jupyter-widgets/ipywidgets#3468).
 *
 * The widget draws plain DOM (no React): the bundle stays small and needs nothing from the page.
 */

import { TaskqApi, type Fetcher } from './api';
import { attemptLabel, formatBytes, formatDuration, progressFraction, taskDuration } from './format';
import { type TaskRef, type ChangeSource, TaskOutputModel, parseRef } from './outputmodel';
import { ChangePoller, type ChangeListener, type PollerOptions } from './poller';
import { WIDGET_CSS } from './widgetstyle';

/** The part of anywidget's model this widget uses. */
export interface WidgetModel {
  get(name: string): any;
  set(name: string, value: unknown): void;
  save_changes(): void;
  send(content: unknown): void;
  on(event: string, callback: (...args: any[]) => void): void;
  off(event: string, callback?: (...args: any[]) => void): void;
}

/** Rows a group widget draws (the rest of the group is counted, not listed). */
export const GROUP_ROWS = 20;
/** ms a request relayed by the kernel may take (a busy kernel answers when its cell ends). */
export const RELAY_TIMEOUT_MS = 60000;
const API = 'taskq/api/';

/** The tasks the widget shows, from its synced state (checked like a saved output's bundle). */
export function refFromModel(model: Pick<WidgetModel, 'get'>): TaskRef | null {
  if (model.get('kind') === 'group') {
    const group = model.get('group_id');
    return group ? parseRef({ api: API, group, count: model.get('total') }) : parseRef({ api: API, task_ids: model.get('task_ids') });
  }
  return parseRef({ api: API, task_ids: [model.get('task_id')] });
}

/** The page's base URL (JupyterLab and Notebook write it into #jupyter-config-data). */
export function pageBaseUrl(doc: Pick<Document, 'getElementById'>): string {
  const el = doc.getElementById('jupyter-config-data');
  try {
    return (el && JSON.parse(el.textContent || '{}').baseUrl) || '/';
  } catch {
    return '/';
  }
}

export function xsrfToken(cookie: string): string | undefined {
  const match = cookie.match('\\b_xsrf=([^;]*)\\b');
  return match ? decodeURIComponent(match[1]) : undefined;
}

/** Requests from the page itself, with its cookie and XSRF token. */
export function pageFetcher(apiPath: string, doc: Pick<Document, 'getElementById' | 'cookie'>, fetchImpl: typeof fetch = fetch): Fetcher {
  return (path, init = {}) => {
    const headers = new Headers(init.headers);
    const token = xsrfToken(doc.cookie);
    if (token) {
      headers.set('X-XSRFToken', token);
    }
    return fetchImpl(pageBaseUrl(doc) + apiPath + path, { ...init, headers, credentials: 'same-origin' });
  };
}

/**
 * One long-poll of the change feed for every widget of a page: it runs while at least one widget
 * listens and stops with the last.
 */
export class SharedFeed implements ChangeSource {
  private readonly poller: ChangePoller;
  private listeners = 0;

  constructor(api: Pick<TaskqApi, 'changes'>, options: PollerOptions = {}) {
    this.poller = new ChangePoller(api, options);
  }

  get isRunning(): boolean {
    return this.poller.isRunning;
  }

  onChange(listener: ChangeListener): () => void {
    const off = this.poller.onChange(listener);
    if (this.listeners++ === 0) {
      this.poller.start();
    }
    let subscribed = true;
    return () => {
      if (subscribed) {
        subscribed = false;
        off();
        if (--this.listeners === 0) {
          void this.poller.stop();
        }
      }
    };
  }
}

const feeds = new Map<string, SharedFeed>();

function pageFeed(key: string, api: TaskqApi): SharedFeed {
  let feed = feeds.get(key);
  if (!feed) {
    feed = new SharedFeed(api);
    feeds.set(key, feed);
  }
  return feed;
}

const respond = (status: number, body: unknown): Response =>
  new Response(status === 204 ? null : JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });

/**
 * The API through the kernel: each request is a custom message the kernel answers, and the kernel's
 * follower thread sends `changes` (the changed ids, with the fresh answers to the widget's reads).
 */
export class KernelRelay implements ChangeSource {
  private next = 0;
  private readonly pending = new Map<number, { resolve: (r: Response) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> }>();
  /** Answers the kernel sent ahead with its last change, by request key: used once, then asked for again. */
  private answers = new Map<string, { status: number; body: unknown }>();
  private readonly listeners = new Set<ChangeListener>();

  constructor(
    private readonly model: WidgetModel,
    private readonly timeoutMs = RELAY_TIMEOUT_MS
  ) {
    model.on('msg:custom', this.onMessage);
  }

  static key(method: string, path: string, body: string | undefined): string {
    return `${method} ${path} ${body ?? ''}`;
  }

  readonly fetch: Fetcher = (path, init = {}) => {
    const method = (init.method || 'GET').toUpperCase();
    const body = typeof init.body === 'string' ? init.body : undefined;
    const key = KernelRelay.key(method, path, body);
    const early = this.answers.get(key);
    if (early) {
      this.answers.delete(key);
      return Promise.resolve(respond(early.status, early.body));
    }
    const id = ++this.next;
    return new Promise<Response>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error('the kernel that showed this widget did not answer (busy, or no longer running)'));
      }, this.timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.model.send({ event: 'request', id, key, method, path, body: body === undefined ? null : JSON.parse(body) });
    });
  };

  private readonly onMessage = (message: any): void => {
    if (!message || typeof message !== 'object') {
      return;
    }
    if (message.event === 'response') {
      const waiting = this.pending.get(message.id);
      if (waiting) {
        this.pending.delete(message.id);
        clearTimeout(waiting.timer);
        waiting.resolve(respond(Number(message.status) || 500, message.body));
      }
    } else if (message.event === 'changes') {
      this.answers = new Map();
      for (const [key, status, body] of Array.isArray(message.answers) ? message.answers : []) {
        this.answers.set(String(key), { status: Number(status), body });
      }
      const changed = Array.isArray(message.changed) ? (message.changed as string[]) : null;
      this.listeners.forEach(l => l(changed));
    }
  };

  onChange(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  dispose(): void {
    this.model.off('msg:custom', this.onMessage);
    this.pending.forEach(p => {
      clearTimeout(p.timer);
      p.reject(new Error('the widget was closed'));
    });
    this.pending.clear();
    this.listeners.clear();
  }
}

function el(tag: string, cls?: string, text?: string): HTMLElement {
  const node = document.createElement(tag);
  if (cls) {
    node.className = cls;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function chip(status: string, label?: string): HTMLElement {
  return el('span', `jtq-chip jtq-${(status || 'unknown').toLowerCase()}`, label ?? status ?? '…');
}

/** Draws a TaskOutputModel as the widget: the same facts as the Lab output, in plain DOM. */
export class WidgetView {
  private readonly head = el('div', 'jtq-head');
  private readonly body = el('div', 'jtq-body');
  private readonly actions = el('div', 'jtq-actions');
  private readonly cancel = el('button', 'jtq-button jtq-cancel') as HTMLButtonElement;
  private readonly retry = el('button', 'jtq-button jtq-retry', 'Retry') as HTMLButtonElement;
  private readonly logView = el('details', 'jtq-log') as HTMLDetailsElement;
  private readonly logText = el('pre', 'jtq-log-text');
  private readonly unsubscribe: () => void;
  private readonly ticker: ReturnType<typeof setInterval>;

  constructor(
    private readonly root: HTMLElement,
    private readonly model: TaskOutputModel,
    /** Whether the page reaches the API itself (download links work only then). */
    private readonly direct: boolean
  ) {
    root.classList.add('jtq-widget');
    if (!model.isSingle) {
      root.classList.add('jtq-group');
    }
    this.logView.append(el('summary', '', 'Log'), this.logText);
    this.logView.addEventListener('toggle', () => model.setLogOpen(this.logView.open));
    this.actions.append(this.cancel, this.retry);
    this.cancel.addEventListener('click', () => void model.cancel());
    this.retry.addEventListener('click', () => void model.retry());
    root.replaceChildren(this.head, this.body, this.actions);
    this.unsubscribe = model.subscribe(() => this.draw());
    this.ticker = setInterval(() => {
      if (model.task?.status === 'RUNNING') {
        this.draw();
      }
    }, 1000);
    this.draw();
  }

  draw(): void {
    const model = this.model;
    const task = model.task;
    const rows: HTMLElement[] = [];
    if (model.gone) {
      const what = model.isSingle ? `Task ${model.ref.task_ids![0]} no longer exists` : `These ${model.total} tasks no longer exist`;
      this.head.replaceChildren(el('span', 'jtq-gone', `${what} on this server.`));
    } else if (!model.loaded) {
      this.head.replaceChildren(el('span', 'jtq-facts', 'Loading…'));
    } else if (task) {
      this.head.replaceChildren(el('span', 'jtq-name', task.name || task.id), chip(task.status));
      rows.push(...this.taskRows(task));
    } else {
      const counts = Object.entries(model.counts);
      this.head.replaceChildren(el('span', 'jtq-name', `${model.total} tasks`), ...counts.map(([s, n]) => chip(s, `${n} ${s}`)));
      const bar = el('progress', 'jtq-progress') as HTMLProgressElement;
      bar.max = Math.max(1, model.total);
      bar.value = counts.filter(([s]) => !['PENDING', 'RUNNING', 'RETRY'].includes(s)).reduce((n, [, c]) => n + c, 0);
      const list = el('div', 'jtq-list');
      for (const t of model.tasks) {
        const row = el('div', 'jtq-row');
        row.dataset.taskId = t.id;
        row.append(chip(t.status), el('span', 'jtq-row-name', t.name || t.id), el('span', 'jtq-facts', `${t.worker || ''} ${t.attempt ? attemptLabel(t) : ''}`.trim()));
        list.append(row);
      }
      if (model.total > model.tasks.length) {
        list.append(el('div', 'jtq-facts jtq-shown', `showing ${model.tasks.length} of ${model.total} tasks`));
      }
      rows.push(bar, list);
    }
    if (model.error) {
      rows.push(el('div', 'jtq-error-line', model.error));
    }
    if (model.message) {
      rows.push(el('div', 'jtq-message', model.message));
    }
    this.body.replaceChildren(...rows);
    this.root.dataset.status = task?.status ?? (model.done ? 'done' : 'live');
    const live = model.loaded && !model.gone;
    this.cancel.textContent = model.isSingle ? 'Cancel' : 'Cancel all';
    this.cancel.style.display = live && model.canCancel ? '' : 'none';
    this.retry.style.display = live && model.canRetry ? '' : 'none';
    this.cancel.disabled = this.retry.disabled = model.busy;
  }

  private taskRows(task: NonNullable<TaskOutputModel['task']>): HTMLElement[] {
    const facts: string[] = [];
    if (task.attempt) {
      facts.push(`attempt ${task.attempt} of ${task.max_retries + 1}`);
    }
    if (task.worker) {
      facts.push(task.gpu ? `on ${task.worker} (GPU)` : `on ${task.worker}`);
    }
    const took = formatDuration(taskDuration(task, Date.now()));
    if (took) {
      facts.push(took);
    }
    const rows = [el('div', 'jtq-facts', facts.join(' · '))];
    if (task.error && task.status !== 'COMPLETE') {
      const details = el('details', 'jtq-error');
      details.append(el('summary', '', `${task.error.type}: ${task.error.message}`));
      if (task.error.traceback) {
        details.append(el('pre', 'jtq-traceback', task.error.traceback));
      }
      rows.push(details);
    }
    const p = task.progress;
    if (p && task.status !== 'COMPLETE') {
      const row = el('div', 'jtq-progress-row');
      const fraction = progressFraction(task);
      if (fraction !== null) {
        const bar = el('progress', 'jtq-progress') as HTMLProgressElement;
        bar.max = 1;
        bar.value = fraction;
        row.append(bar);
      }
      const label = p.total ? `${p.done} / ${p.total}` : `${p.done}`;
      row.append(el('span', 'jtq-facts', p.message ? `${label} · ${p.message}` : label));
      rows.push(row);
    }
    if (task.outputs?.length) {
      const links = el('div', 'jtq-outputs');
      for (const output of task.outputs) {
        if (this.direct) {
          const a = el('a', 'jtq-download', `⬇ ${output.name}`) as HTMLAnchorElement;
          a.href = output.url;
          a.setAttribute('download', output.name);
          links.append(a, el('span', 'jtq-facts', ` ${formatBytes(output.size)} `));
        } else {
          links.append(el('span', 'jtq-facts', `${output.name} (${formatBytes(output.size)}) `));
        }
      }
      rows.push(links);
    }
    this.logView.querySelector('summary')!.textContent = task.status === 'RUNNING' ? 'Log (live)' : 'Log';
    this.logText.textContent = this.model.log || '(empty)';
    rows.push(this.logView);
    return rows;
  }

  dispose(): void {
    this.unsubscribe();
    clearInterval(this.ticker);
  }
}

function injectStyle(doc: Document): void {
  if (!doc.getElementById('jtq-widget-style')) {
    const style = doc.createElement('style');
    style.id = 'jtq-widget-style';
    style.textContent = WIDGET_CSS;
    doc.head.append(style);
  }
}

/** anywidget's entry point: draws the widget in `el` and returns what undoes it. */
export function render({ model, el: root }: { model: WidgetModel; el: HTMLElement }): () => void {
  injectStyle(root.ownerDocument);
  const ref = refFromModel(model);
  if (!ref) {
    root.textContent = model.get('text') || 'jupyter-taskq: this widget names no task';
    return () => undefined;
  }
  const apiPath: string = model.get('api_path') || '';
  let relay: KernelRelay | null = null;
  let api: TaskqApi;
  let changes: ChangeSource;
  if (apiPath) {
    api = new TaskqApi(pageFetcher(apiPath, root.ownerDocument));
    changes = pageFeed(apiPath, api);
  } else {
    relay = new KernelRelay(model);
    api = new TaskqApi(relay.fetch);
    changes = relay;
  }
  const output = new TaskOutputModel(api, changes, ref, { listLimit: GROUP_ROWS });
  output.onRefChange(next => {
    // A retry: the widget (and the kernel's follower, and the saved state) now name the new task.
    if (next.task_ids?.length === 1) {
      model.set('task_id', next.task_ids[0]);
      model.save_changes();
    }
  });
  const view = new WidgetView(root, output, Boolean(apiPath));
  void output.start();
  return () => {
    view.dispose();
    output.dispose();
    relay?.dispose();
  };
}

export default { render };
