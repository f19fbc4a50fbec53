import { describe, expect, it } from 'vitest';
import { TaskqApi } from '../src/api';
import { type ChangeSource, TaskOutputModel, fallbacks, parseRef } from '../src/outputmodel';
import type { ChangeListener } from '../src/poller';
import type { Task } from '../src/types';

function task(id: string, status: string, extra: Partial<Task> = {}): Task {
  return { id, name: `n-${id}`, status, attempt: 1, max_retries: 3, worker: 'cpu-0', outputs: [], error: null, ...extra } as Task;
}

/** A server in memory with the endpoints a task output uses; records every request. */
function fakeServer(initial: Task[], groups: Record<string, string[]> = {}) {
  const tasks = new Map(initial.map(t => [t.id, t]));
  const requests: string[] = [];
  const fetcher = async (path: string, init?: RequestInit): Promise<Response> => {
    requests.push(`${init?.method ?? 'GET'} ${path}`);
    const url = new URL(path, 'http://x/');
    const reply = (body: unknown, status = 200) => new Response(JSON.stringify(body), { status });
    const body = init?.body ? JSON.parse(String(init.body)) : {};
    if (url.pathname === '/tasks/wait') {
      return reply({ done: true, tasks: body.task_ids.map((id: string) => tasks.get(id) ?? { id, status: null, error: 'not found' }) });
    }
    if (url.pathname === '/tasks/cancel') {
      const cancelled = body.task_ids.filter((id: string) => ['PENDING', 'RUNNING'].includes(tasks.get(id)?.status ?? ''));
      cancelled.forEach((id: string) => tasks.set(id, { ...tasks.get(id)!, status: 'CANCELLED' }));
      return reply({ cancelled, not_cancelled: [] });
    }
    const group = url.pathname.match(/^\/groups\/(\w+)$/);
    if (group) {
      const ids = groups[group[1]];
      const existing = ids?.filter(id => tasks.has(id)) ?? [];
      if (!existing.length) {
        return reply({ message: 'no task group', reason: 'not found' }, 404);
      }
      const counts: Record<string, number> = {};
      ids.forEach(id => {
        const s = tasks.get(id)?.status ?? 'MISSING';
        counts[s] = (counts[s] || 0) + 1;
      });
      const limit = Number(url.searchParams.get('limit'));
      const answer: Record<string, unknown> = {
        id: group[1],
        count: ids.length,
        counts,
        done: Object.keys(counts).every(s => !['PENDING', 'RUNNING', 'RETRY'].includes(s)),
        gone: false,
        tasks: ids.slice(0, limit).map(id => tasks.get(id) ?? { id, status: null })
      };
      if (url.searchParams.get('ids') === '1') {
        answer.task_ids = ids;
      }
      return reply(answer);
    }
    const display = url.pathname.match(/^\/tasks\/([\w-]+)\/display$/);
    if (display) {
      const found = tasks.get(display[1]);
      if (!found) {
        return reply({ message: 'no task', reason: 'not found' }, 404);
      }
      if (found.status !== 'COMPLETE') {
        return reply({ message: `task is ${found.status}`, reason: 'conflict' }, 409);
      }
      if (found.result?.expired) {
        return reply({ message: 'the result has expired', reason: 'gone' }, 410);
      }
      return reply({ task_id: found.id, data: { 'text/plain': `<${found.id}>`, 'text/html': `<table><tr><td>${found.id}</td></tr></table>` }, metadata: {}, left_out: [] });
    }
    const retry = url.pathname.match(/^\/tasks\/([\w-]+)\/retry$/);
    if (retry) {
      const fresh = task(`${retry[1]}-r`, 'PENDING', { retry_of: retry[1] });
      tasks.set(fresh.id, fresh);
      return reply(fresh, 201);
    }
    const one = url.pathname.match(/^\/tasks\/([\w-]+)$/);
    if (one) {
      const found = tasks.get(one[1]);
      return found ? reply(found) : reply({ message: 'no task', reason: 'not found' }, 404);
    }
    return reply({ message: 'no such path' }, 404);
  };
  return { tasks, requests, api: new TaskqApi(fetcher) };
}

/** A change feed the test fires by hand. */
function feed() {
  const listeners = new Set<ChangeListener>();
  const source: ChangeSource = {
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    }
  };
  return { source, listeners, fire: (changed: string[] | null) => listeners.forEach(l => l(changed)) };
}

const settle = () => new Promise(r => setTimeout(r, 10));

describe('parseRef', () => {
  it('accepts task ids or a group id, nothing else', () => {
    expect(parseRef({ version: 1, api: 'taskq/api/', task_ids: ['a-1'] })?.task_ids).toEqual(['a-1']);
    expect(parseRef({ version: 1, group: 'f'.repeat(32), count: 2000 })?.group).toBe('f'.repeat(32));
    expect(parseRef({ task_ids: ['../../api/kernels'] })).toBeNull();
    expect(parseRef({ group: '../x' })).toBeNull();
    expect(parseRef({ task_ids: [] })).toBeNull();
    expect(parseRef('nope')).toBeNull();
  });
});

describe('TaskOutputModel', () => {
  it('reads its task, then refreshes only on changes that concern it', async () => {
    const server = fakeServer([task('a', 'RUNNING'), task('b', 'PENDING')]);
    const changes = feed();
    const model = new TaskOutputModel(server.api, changes.source, { version: 1, api: 'taskq/api/', task_ids: ['a'] });
    await model.start();
    expect(model.task?.status).toBe('RUNNING');
    expect(model.canCancel).toBe(true);
    server.requests.length = 0;
    changes.fire(['b']);
    await settle();
    expect(server.requests).toEqual([]);
    server.tasks.set('a', task('a', 'COMPLETE'));
    changes.fire(['b', 'a']);
    await settle();
    expect(server.requests).toEqual(['GET tasks/a', 'GET tasks/a/display']);
    expect(model.task?.status).toBe('COMPLETE');
    expect(model.done).toBe(true);
    expect(model.canRetry).toBe(true);
    expect(fallbacks(model)?.text).toBe('Task n-a · COMPLETE · attempt 1 of 4 · on cpu-0  [a]');
    model.dispose();
    expect(changes.listeners.size).toBe(0);
  });

  it('reads a COMPLETE task\'s result display once, not before it completes nor on later changes', async () => {
    const server = fakeServer([task('a', 'RUNNING')]);
    const changes = feed();
    const model = new TaskOutputModel(server.api, changes.source, { version: 1, api: 'taskq/api/', task_ids: ['a'] });
    await model.start();
    expect(model.display).toBeNull();
    expect(server.requests).toEqual(['GET tasks/a']);
    server.tasks.set('a', task('a', 'COMPLETE'));
    changes.fire(['a']);
    await settle();
    expect(model.display?.data['text/html']).toBe('<table><tr><td>a</td></tr></table>');
    expect(model.displayError).toBeNull();
    changes.fire(['a']);
    await settle();
    expect(server.requests.filter(r => r.endsWith('/display'))).toEqual(['GET tasks/a/display']);
    model.dispose();
  });

  it('says when a result has expired, and shows nothing for a group', async () => {
    const server = fakeServer([task('a', 'COMPLETE', { result: { available: false, size: null, expired: true, expires_in: null } }), task('b', 'COMPLETE')]);
    const model = new TaskOutputModel(server.api, feed().source, { version: 1, api: 'taskq/api/', task_ids: ['a'] });
    await model.start();
    expect(model.display).toBeNull();
    expect(model.displayError).toBe('The result has expired.');
    const group = new TaskOutputModel(server.api, feed().source, { version: 1, api: 'taskq/api/', task_ids: ['a', 'b'] });
    await group.start();
    expect(server.requests.filter(r => r.endsWith('/display'))).toEqual(['GET tasks/a/display']);
  });

  it('a group reads no result up front; a row opened shows its task\'s result, read once', async () => {
    const ids = Array.from({ length: 2000 }, (_, i) => `t${i}`);
    const server = fakeServer(ids.map(id => task(id, 'COMPLETE')), { g0000000000000000000000000000000: ids });
    const changes = feed();
    const model = new TaskOutputModel(server.api, changes.source, { version: 1, api: 'taskq/api/', group: 'g0000000000000000000000000000000', count: 2000 });
    await model.start();
    expect(model.tasks.length).toBe(50);
    expect(server.requests.filter(r => r.endsWith('/display'))).toEqual([]);
    await model.toggleResult('t3');
    expect(model.expanded.has('t3')).toBe(true);
    expect(model.resultOf('t3').bundle?.data['text/plain']).toBe('<t3>');
    expect(model.resultOf('t4').bundle).toBeNull();
    await model.toggleResult('t3'); // closed
    expect(model.expanded.has('t3')).toBe(false);
    await model.toggleResult('t3'); // opened again: already read
    changes.fire(['t3']);
    await settle();
    expect(server.requests.filter(r => r.endsWith('/display'))).toEqual(['GET tasks/t3/display']);
    model.dispose();
  });

  it('a retried task shows the new task\'s result, not the old one\'s', async () => {
    const server = fakeServer([task('a', 'COMPLETE')]);
    const changes = feed();
    const model = new TaskOutputModel(server.api, changes.source, { version: 1, api: 'taskq/api/', task_ids: ['a'] });
    await model.start();
    expect(model.display?.task_id).toBe('a');
    await model.retry();
    expect(model.display).toBeNull();
    server.tasks.set('a-r', task('a-r', 'COMPLETE'));
    changes.fire(['a-r']);
    await settle();
    expect(model.display?.task_id).toBe('a-r');
  });

  it('says a deleted task is gone', async () => {
    const server = fakeServer([]);
    const model = new TaskOutputModel(server.api, feed().source, { version: 1, api: 'taskq/api/', task_ids: ['zzz'] });
    await model.start();
    expect(model.gone).toBe(true);
    expect(model.error).toBeNull();
    expect(fallbacks(model)?.text).toBe('Task zzz no longer exists');
  });

  it('does not call a task gone when the server has no queue at all', async () => {
    const api = new TaskqApi(async () => new Response('<html>404: Not Found</html>', { status: 404 }));
    const model = new TaskOutputModel(api, feed().source, { version: 1, api: 'taskq/api/', task_ids: ['a'] });
    await model.start();
    expect(model.gone).toBe(false);
    expect(model.error).toContain('404');
    expect(fallbacks(model)).toBeNull(); // the saved fallbacks keep what the kernel wrote
  });

  it('follows the new task after a retry and tells the renderer', async () => {
    const server = fakeServer([task('a', 'FAILED', { error: { type: 'ValueError', message: 'bad', traceback: 'tb' } })]);
    const model = new TaskOutputModel(server.api, feed().source, { version: 1, api: 'taskq/api/', task_ids: ['a'] });
    await model.start();
    expect(fallbacks(model)?.html).toContain('<pre>tb</pre>');
    const refs: string[][] = [];
    model.onRefChange(ref => refs.push(ref.task_ids!));
    await model.retry();
    expect(refs).toEqual([['a-r']]);
    expect(model.message).toBe('retried as a-r');
    expect(model.task?.id).toBe('a-r');
  });

  it('shows a big group from its summary, learns its ids once, and cancels them all', async () => {
    const ids = Array.from({ length: 120 }, (_, i) => `t${i}`);
    const server = fakeServer(
      ids.map((id, i) => task(id, i < 100 ? 'COMPLETE' : 'PENDING')),
      { ['a'.repeat(32)]: ids }
    );
    const changes = feed();
    const model = new TaskOutputModel(server.api, changes.source, { version: 1, api: 'taskq/api/', group: 'a'.repeat(32), count: 120 }, { listLimit: 50 });
    await model.start();
    expect(server.requests).toEqual([`GET groups/${'a'.repeat(32)}?limit=50&ids=1`]);
    expect(model.tasks).toHaveLength(50);
    expect(model.counts).toEqual({ COMPLETE: 100, PENDING: 20 });
    expect(model.canCancel).toBe(true);
    expect(model.concerns(['elsewhere'])).toBe(false);
    expect(model.concerns(['t119'])).toBe(true);
    changes.fire(['t119']);
    await settle();
    expect(server.requests[1]).toBe(`GET groups/${'a'.repeat(32)}?limit=50`);
    await model.cancel();
    expect(model.message).toBe('cancelled 20');
    expect(model.counts).toEqual({ COMPLETE: 100, CANCELLED: 20 });
    expect(model.done).toBe(true);
    const texts = fallbacks(model)!;
    expect(texts.text).toBe('120 tasks: 20 CANCELLED, 100 COMPLETE');
    expect(texts.html).toContain('showing 10 of 120 tasks');
    expect(texts.html.match(/<li>/g)).toHaveLength(10);
  });

  it('a small group lists its ids and reads them in one request', async () => {
    const server = fakeServer([task('a', 'COMPLETE'), task('b', 'FAILED')]);
    const model = new TaskOutputModel(server.api, feed().source, { version: 1, api: 'taskq/api/', task_ids: ['a', 'b', 'gone'] });
    await model.start();
    expect(server.requests).toEqual(['POST tasks/wait']);
    expect(model.tasks.map(t => t.id)).toEqual(['a', 'b']);
    expect(model.counts).toEqual({ COMPLETE: 1, FAILED: 1, MISSING: 1 });
    expect(model.done).toBe(true);
    expect(model.isSingle).toBe(false);
  });
});
