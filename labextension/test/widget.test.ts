import { describe, expect, it } from 'vitest';
import { TaskqApi } from '../src/api';
import { TaskOutputModel } from '../src/outputmodel';
import { CANCELLABLE, FINAL, STATUSES, STORED_STATUSES, WAITING } from '../src/types';
import { KernelRelay, SharedFeed, pageBaseUrl, pageFetcher, refFromModel, xsrfToken, type WidgetModel } from '../src/widget';

/** An anywidget model as the widget sees it: traits, and custom messages both ways. */
function fakeModel(traits: Record<string, unknown>) {
  const sent: any[] = [];
  const handlers = new Map<string, Set<(...a: any[]) => void>>();
  const model: WidgetModel & { sent: any[]; receive: (m: unknown) => void } = {
    sent,
    get: name => traits[name],
    set: (name, value) => void (traits[name] = value),
    save_changes: () => undefined,
    send: content => void sent.push(content),
    on: (event, cb) => void (handlers.get(event) ?? handlers.set(event, new Set()).get(event)!).add(cb),
    off: (event, cb) => void (cb ? handlers.get(event)?.delete(cb) : handlers.delete(event)),
    receive: m => handlers.get('msg:custom')?.forEach(cb => cb(m))
  };
  return model;
}

const doc = (baseUrl: string, cookie = '') => ({
  cookie,
  getElementById: (id: string) => (id === 'jupyter-config-data' ? ({ textContent: JSON.stringify({ baseUrl }) } as HTMLElement) : null)
});

const task = (id: string, status = 'RUNNING') => ({ id, status, name: id, attempt: 1, max_retries: 3, outputs: [] });
const tick = () => new Promise(r => setTimeout(r, 0));

describe('the status sets', () => {
  it('come from status.py: the filter lists each stored status once, and LOST counts as final', () => {
    expect([...STATUSES].sort()).toEqual([...STORED_STATUSES].sort());
    expect(FINAL).toContain('LOST');
    expect(WAITING.every(s => CANCELLABLE.includes(s))).toBe(true);
  });
});

describe('the widget state', () => {
  it('names a task, a few ids, or a server-side group, and nothing else is trusted', () => {
    expect(refFromModel(fakeModel({ kind: 'task', task_id: 'abc' }))).toMatchObject({ task_ids: ['abc'] });
    expect(refFromModel(fakeModel({ kind: 'group', task_ids: ['a', 'b'], group_id: '' }))).toMatchObject({ task_ids: ['a', 'b'] });
    const group = 'f'.repeat(32);
    expect(refFromModel(fakeModel({ kind: 'group', task_ids: [], group_id: group, total: 2000 }))).toMatchObject({ group, count: 2000 });
    expect(refFromModel(fakeModel({ kind: 'task', task_id: '../contents' }))).toBeNull();
  });
});

describe('requests from the page', () => {
  it('go to the base URL with the cookie and the XSRF token', async () => {
    expect(pageBaseUrl(doc('/user/ann/'))).toBe('/user/ann/');
    expect(xsrfToken('a=1; _xsrf=2%7Cx; b=3')).toBe('2|x');
    const calls: [string, RequestInit][] = [];
    const fetcher = pageFetcher('taskq/api/', doc('/user/ann/', '_xsrf=tok'), (async (url: string, init: RequestInit) => {
      calls.push([url, init]);
      return new Response('{}');
    }) as typeof fetch);
    await fetcher('tasks/x', { method: 'POST' });
    expect(calls[0][0]).toBe('/user/ann/taskq/api/tasks/x');
    expect(calls[0][1].credentials).toBe('same-origin');
    expect(new Headers(calls[0][1].headers).get('X-XSRFToken')).toBe('tok');
  });

  it('share one long-poll of the change feed per page, stopped with the last widget', async () => {
    let polls = 0;
    const feed = new SharedFeed(
      {
        changes: async (since: string) => {
          polls += 1;
          await new Promise(r => setTimeout(r, 5));
          return { cursor: since + 'x', changed: [] };
        }
      },
      { sleep: async () => undefined }
    );
    const seen: (string[] | null)[] = [];
    const offA = feed.onChange(c => seen.push(c));
    const offB = feed.onChange(() => undefined);
    expect(feed.isRunning).toBe(true);
    offA();
    offA(); // twice is once
    expect(feed.isRunning).toBe(true);
    offB();
    expect(feed.isRunning).toBe(false);
    expect(polls).toBe(1);
  });
});

describe('requests relayed by the kernel', () => {
  it('are custom messages the kernel answers, read by the same output model as the Lab renderer', async () => {
    const model = fakeModel({ kind: 'task', task_id: 't1' });
    const relay = new KernelRelay(model, 1000);
    const output = new TaskOutputModel(new TaskqApi(relay.fetch), relay, { version: 1, api: 'taskq/api/', task_ids: ['t1'] });
    const started = output.start();
    await tick();
    const request = model.sent[0];
    expect(request).toMatchObject({ event: 'request', method: 'GET', path: 'tasks/t1', body: null });
    model.receive({ event: 'response', id: request.id, status: 200, body: task('t1') });
    await started;
    expect(output.task?.status).toBe('RUNNING');

    // A change sent with the answer to the model's read: no round trip through the (maybe busy) kernel.
    model.receive({ event: 'changes', changed: ['t1'], answers: [[request.key, 200, task('t1', 'COMPLETE')]] });
    await tick();
    await tick();
    expect(output.task?.status).toBe('COMPLETE');
    expect(model.sent.filter(m => m.event === 'request' && m.path === 'tasks/t1')).toHaveLength(1);
    output.dispose();
    relay.dispose();
  });

  it('say clearly when the kernel does not answer, and pass on the API error', async () => {
    const model = fakeModel({});
    const api = new TaskqApi(new KernelRelay(model, 10).fetch);
    await expect(api.get('t1')).rejects.toThrow(/did not answer/);
    const relay = new KernelRelay(model, 1000);
    const pending = new TaskqApi(relay.fetch).cancel(['t1']);
    const request = model.sent[model.sent.length - 1];
    expect(request.body).toEqual({ task_ids: ['t1'] });
    model.receive({ event: 'response', id: request.id, status: 403, body: { message: 'not yours' } });
    await expect(pending).rejects.toThrow(/Cancelling failed: 403 not yours/);
  });
});
