import { describe, expect, it } from 'vitest';
import { TaskqApi } from '../src/api';
import { QueueModel } from '../src/model';
import type { Task } from '../src/types';

function task(id: string, status: string, extra: Partial<Task> = {}): Task {
  return { id, name: id, status, created_at: '2026-01-01T00:00:00Z', attempt: 0, max_retries: 3, ...extra } as Task;
}

/** A server in memory: 120 tasks, newest first, filtered by status and text like the real one. */
function fakeServer() {
  const tasks: Task[] = Array.from({ length: 120 }, (_, i) =>
    task(`t${119 - i}`, i % 3 ? 'COMPLETE' : 'FAILED', { owner: i % 4 ? 'ada' : 'bob' })
  );
  let you: { name: string; sees_all: boolean } = { name: 'ada', sees_all: true };
  const requests: string[] = [];
  const fetcher = async (path: string, init?: RequestInit): Promise<Response> => {
    requests.push(`${init?.method ?? 'GET'} ${path}`);
    const url = new URL(path, 'http://x/');
    const reply = (body: unknown, status = 200) => new Response(JSON.stringify(body), { status });
    if (url.pathname === '/tasks') {
      const statuses = (url.searchParams.get('status') || '').split(',').filter(Boolean);
      const q = url.searchParams.get('q') || '';
      const limit = Number(url.searchParams.get('limit'));
      const offset = Number(url.searchParams.get('offset'));
      const owner = url.searchParams.get('owner');
      const hits = tasks.filter(
        t => (!statuses.length || statuses.includes(t.status)) && t.id.includes(q) && (!owner || t.owner === owner)
      );
      return reply({ tasks: hits.slice(offset, offset + limit), total: hits.length, limit, offset });
    }
    if (url.pathname === '/stats') {
      const counts: Record<string, number> = {};
      tasks.forEach(t => (counts[t.status] = (counts[t.status] || 0) + 1));
      const users = Object.fromEntries([...new Set(tasks.map(t => t.owner as string))].map(o => [o, {}]));
      return reply({ queue_depth: { cpu: 0 }, workers: [], counts, gpus: [], disk_usage_bytes: 0, users, you });
    }
    if (url.pathname === '/warm' && init?.method === 'DELETE') {
      return reply({ workers_asked: 2 });
    }
    if (url.pathname === '/tasks/cancel') {
      return reply({ message: 'queue is on fire', reason: 'bad request' }, 400);
    }
    if (url.pathname.startsWith('/tasks/')) {
      const found = tasks.find(t => `/tasks/${t.id}` === url.pathname.replace(/\/(logs|attempts)$/, ''));
      if (!found) {
        return reply({ message: 'no task', reason: 'not found' }, 404);
      }
      if (url.pathname.endsWith('/attempts')) {
        const error = { type: 'WorkerLost', message: 'worker cpu0 stopped answering', traceback: null };
        return reply({
          task_id: found.id,
          attempts: [
            { attempt: 1, worker: 'cpu0', device: 'CPU', started_at: 'a', ended_at: 'b', status: 'RETRY', reason: 'worker lost', error },
            { attempt: 2, worker: 'cpu1', device: 'CPU', started_at: 'c', ended_at: null, status: null, reason: null, error: null }
          ]
        });
      }
      if (url.pathname.endsWith('/logs')) {
        const attempt = url.searchParams.get('attempt');
        const data = attempt ? `attempt ${attempt} printed this` : 'x'.repeat(100) + 'TAIL';
        const offset = Number(url.searchParams.get('offset'));
        return reply({
          data: data.slice(offset),
          next_offset: data.length,
          size: data.length,
          reset: false,
          dropped: 0,
          status: found.status,
          attempt: attempt ? Number(attempt) : 2
        });
      }
      return reply(found);
    }
    return reply({ message: 'no such path' }, 404);
  };
  return { tasks, requests, api: new TaskqApi(fetcher), setYou: (v: typeof you) => (you = v) };
}

const memory = () => {
  const data = new Map<string, string>();
  return { getItem: (k: string) => data.get(k) ?? null, setItem: (k: string, v: string) => void data.set(k, v) };
};

describe('QueueModel', () => {
  it('fetches one page at a time with the filter, never the whole list', async () => {
    const { api, requests } = fakeServer();
    const model = new QueueModel(api, { pageSize: 25 });
    await model.loadPage();
    expect(model.page?.tasks.length).toBe(25);
    expect(model.page?.total).toBe(120);
    await model.setFilter('FAILED');
    expect(model.page?.total).toBe(40);
    expect(model.page?.tasks.every(t => t.status === 'FAILED')).toBe(true);
    await model.setText('t11');
    expect(model.page?.tasks.map(t => t.id)).toEqual(['t119', 't116', 't113', 't110', 't11']);
    expect(requests.at(-1)).toBe('GET tasks?status=FAILED&q=t11&limit=25&offset=0');
  });

  it('a change during a slow read never restarts it: the page arrives, then one more read', async () => {
    const { api } = fakeServer();
    const plainList = api.list.bind(api);
    const gates: Array<() => void> = [];
    let aborted = 0;
    api.list = (query, signal) => {
      let answered = false;
      signal?.addEventListener('abort', () => (answered ? undefined : aborted++)); // a read cut short
      return new Promise(resolve =>
        gates.push(() => {
          answered = true;
          resolve(plainList(query, signal));
        })
      );
    };
    const model = new QueueModel(api);
    const first = model.reloadPage();
    for (let i = 0; i < 5; i++) {
      void model.reloadPage(); // changes keep coming while the server is slow
    }
    expect(gates.length).toBe(1);
    gates[0]();
    await new Promise(resolve => setTimeout(resolve, 0));
    expect(model.page?.tasks.length).toBe(50); // the first answer is shown
    expect(gates.length).toBe(2); // one more read for the changes that came meanwhile
    gates[1]();
    await first;
    expect(aborted).toBe(0);
    expect(model.loading).toBe(false);
  });

  it('keeps the page inside the list when it shrinks', async () => {
    const { api } = fakeServer();
    const model = new QueueModel(api, { pageSize: 50 });
    await model.setPage(9);
    expect(model.pageIndex).toBe(2);
    expect(model.page?.offset).toBe(100);
  });

  it('shows an API error as a message, keeping the last page', async () => {
    const { api } = fakeServer();
    const model = new QueueModel(api);
    await model.loadPage();
    model.toggleSelected('t119');
    await model.cancelSelected();
    expect(model.error).toBe(null); // t119 is not cancellable: nothing was sent
    await model.cancel(['t119']);
    expect(model.error).toBe('Cancelling failed: 400 queue is on fire');
    expect(model.page?.tasks.length).toBe(50);
  });

  it('shows why the queue did not start (its 503) instead of an empty list', async () => {
    const message = 'jupyter-taskq did not start: the queue database /s/taskq.db cannot be opened';
    const api = new TaskqApi(async () => new Response(JSON.stringify({ message, reason: 'jupyter-taskq not started' }), { status: 503 }));
    const model = new QueueModel(api);
    await Promise.all([model.loadPage(), model.loadStats()]);
    expect(model.page).toBeNull();
    expect(model.unavailable).toContain(message);
  });

  it('counts failures since the panel was last looked at', async () => {
    const { api, tasks } = fakeServer();
    const storage = memory();
    const model = new QueueModel(api, { storage });
    await model.loadStats();
    expect(model.seenFailures).toBe(40);
    tasks.unshift(task('t120', 'FAILED'), task('t121', 'TIMEOUT'));
    await model.loadStats();
    expect(model.seenFailures).toBe(40); // hidden: the two new failures are unseen
    model.setVisible(true);
    expect(model.seenFailures).toBe(42);
    expect(storage.getItem('jupyter-taskq:seen-failures')).toBe('42');
    expect(new QueueModel(api, { storage }).seenFailures).toBe(42);
  });

  it('opens a detail view with the log tail and closes it when the task is deleted elsewhere', async () => {
    const { api, tasks } = fakeServer();
    const model = new QueueModel(api, { logTail: 10 });
    await model.openDetail('t5');
    expect(model.detail?.id).toBe('t5');
    expect(model.log).toBe('xxxxxxTAIL');
    expect(model.attempts.map(a => [a.attempt, a.worker, a.reason])).toEqual([
      [1, 'cpu0', 'worker lost'],
      [2, 'cpu1', null]
    ]);
    tasks.splice(tasks.findIndex(t => t.id === 't5'), 1);
    await model.loadDetail(false);
    expect(model.detailId).toBeNull();
    expect(model.attempts).toEqual([]);
    expect(model.error).toContain('no longer exists');
  });

  it('shows one attempt\'s own log, then the latest again, and forgets the choice with the task', async () => {
    const { api, requests } = fakeServer();
    const model = new QueueModel(api, { logTail: 1000 });
    await model.openDetail('t5');
    requests.length = 0;
    await model.showAttemptLog(1);
    expect(model.logAttempt).toBe(1);
    expect(model.log).toBe('attempt 1 printed this');
    expect(requests).toEqual(['GET tasks/t5/logs?offset=0&attempt=1']);
    await model.loadDetail(false); // a change to the task keeps the chosen attempt's log
    expect(model.log).toBe('attempt 1 printed this');
    expect(requests.filter(r => r.includes('/logs') && !r.includes('attempt=1'))).toEqual([]);
    await model.showAttemptLog(null);
    expect(model.log).toBe('x'.repeat(100) + 'TAIL');
    await model.showAttemptLog(2);
    await model.openDetail('t6');
    expect(model.logAttempt).toBeNull();
  });

  it('offers "Go to cell" only for a task that knows its notebook and cell, once the plugin wired it', () => {
    const { api } = fakeServer();
    const model = new QueueModel(api);
    const fromNotebook = task('a', 'COMPLETE', { notebook: 'work/nb.ipynb', cell_id: 'c1' });
    expect(model.canGoToCell(fromNotebook)).toBe(false);
    const opened: string[][] = [];
    model.goToCell = (path, cellId) => opened.push([path, cellId]);
    expect(model.canGoToCell(fromNotebook)).toBe(true);
    expect(model.canGoToCell(task('b', 'COMPLETE', { notebook: null, cell_id: null }))).toBe(false);
    model.openCell(fromNotebook);
    expect(opened).toEqual([['work/nb.ipynb', 'c1']]);
  });

  it('offers "Mine / Everyone" to whoever sees every owner, and "Mine" lists only their tasks', async () => {
    const { api, requests, setYou } = fakeServer();
    const model = new QueueModel(api, { pageSize: 200 });
    await model.loadStats();
    await model.loadPage();
    expect(model.ownerSwitchShown).toBe(true);
    expect(new Set(model.page?.tasks.map(t => t.owner))).toEqual(new Set(['ada', 'bob']));
    await model.setOwnerScope('mine');
    expect(requests.at(-1)).toBe('GET tasks?owner=ada&limit=200&offset=0');
    expect(model.page?.total).toBe(90);
    expect(model.page?.tasks.every(t => t.owner === 'ada')).toBe(true);
    await model.setOwnerScope('everyone');
    expect(model.page?.total).toBe(120);
    setYou({ name: 'bob', sees_all: false }); // a plain hub user: their own tasks only, no switch
    await model.loadStats();
    expect(model.ownerSwitchShown).toBe(false);
  });

  it('drops warm processes through the API and says how many workers were asked', async () => {
    const { api, requests } = fakeServer();
    const model = new QueueModel(api);
    expect(await model.dropWarm()).toBe(2);
    expect(requests).toContain('DELETE warm');
    expect(model.error).toBeNull();
  });
});
