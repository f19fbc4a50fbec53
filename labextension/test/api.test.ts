import { describe, expect, it } from 'vitest';
import { ApiError, TaskqApi, listPath } from '../src/api';

function json(body: unknown, status = 200): Response {
  return new Response(status === 204 ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' }
  });
}

function recorder(answers: Response[]) {
  const calls: { path: string; init?: RequestInit }[] = [];
  const fetcher = async (path: string, init?: RequestInit) => {
    calls.push({ path, init });
    const next = answers.shift();
    if (!next) {
      throw new Error('no more answers');
    }
    return next;
  };
  return { calls, api: new TaskqApi(fetcher) };
}

describe('listPath', () => {
  it('leaves out empty filters and keeps the page', () => {
    expect(listPath({ limit: 50, offset: 100 })).toBe('tasks?limit=50&offset=100');
  });
  it('joins statuses and encodes the text', () => {
    expect(listPath({ statuses: ['PENDING', 'RETRY'], text: ' a b&c ', limit: 10, offset: 0 })).toBe(
      'tasks?status=PENDING%2CRETRY&q=a+b%26c&limit=10&offset=0'
    );
  });
});

describe('TaskqApi', () => {
  it('turns a JSON error into a readable ApiError', async () => {
    const { api } = recorder([json({ message: "unknown status 'X'", reason: 'bad request' }, 400)]);
    const error = await api.list({}).catch(e => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error.status).toBe(400);
    expect(error.message).toBe("Listing tasks failed: 400 unknown status 'X'");
  });

  it('explains a 403 and an HTML error page', async () => {
    const { api } = recorder([new Response('<html><body><h1>Forbidden</h1></body></html>', { status: 403 })]);
    const error = await api.stats().catch(e => e);
    expect(error.message).toContain('403 Forbidden');
    expect(error.message).toContain('logged in');
  });

  it('says the server did not answer on a network failure', async () => {
    const api = new TaskqApi(async () => {
      throw new TypeError('Failed to fetch');
    });
    const error = await api.stats().catch(e => e);
    expect(error.message).toContain('did not answer (Failed to fetch)');
  });

  it('posts cancels as JSON and reads 204 deletes', async () => {
    const { api, calls } = recorder([json({ cancelled: ['a'], not_cancelled: [] }), json(null, 204)]);
    expect(await api.cancel(['a'])).toEqual({ cancelled: ['a'], not_cancelled: [] });
    expect(calls[0].path).toBe('tasks/cancel');
    expect(calls[0].init?.method).toBe('POST');
    expect(JSON.parse(String(calls[0].init?.body))).toEqual({ task_ids: ['a'] });
    expect(await api.remove('a/b')).toBeUndefined();
    expect(calls[1]).toMatchObject({ path: 'tasks/a%2Fb', init: { method: 'DELETE' } });
  });

  it('long-polls changes with the cursor and wait', async () => {
    const { api, calls } = recorder([json({ cursor: 'e.3', changed: ['x'] })]);
    expect(await api.changes('e.1', 25)).toEqual({ cursor: 'e.3', changed: ['x'] });
    expect(calls[0].path).toBe('changes?since=e.1&wait=25');
  });

  it('reads a result display, and says a 409 before the task completes', async () => {
    const bundle = { task_id: 'a', data: { 'text/plain': '1' }, metadata: {}, left_out: [] };
    const { api, calls } = recorder([json(bundle), json({ message: 'task a is RUNNING', reason: 'conflict' }, 409)]);
    expect(await api.display('a/b')).toEqual(bundle);
    expect(calls[0].path).toBe('tasks/a%2Fb/display');
    const error = await api.display('a').catch(e => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error.status).toBe(409);
  });

  it('reads the latest log, or one attempt\'s own log', async () => {
    const chunk = { data: 'x', next_offset: 1, size: 1, reset: false, dropped: 0, status: 'FAILED' };
    const { api, calls } = recorder([json(chunk), json({ ...chunk, attempt: 2 })]);
    await api.logs('a', 0);
    expect((await api.logs('a', 5, 2)).attempt).toBe(2);
    expect(calls.map(c => c.path)).toEqual(['tasks/a/logs?offset=0', 'tasks/a/logs?offset=5&attempt=2']);
  });

  it('cancels all waiting tasks page by page until none is left', async () => {
    const page = (ids: string[]) => json({ tasks: ids.map(id => ({ id })), total: ids.length, limit: 2, offset: 0 });
    const { api, calls } = recorder([
      page(['a', 'b']),
      json({ cancelled: ['a', 'b'], not_cancelled: [] }),
      page(['c']),
      json({ cancelled: ['c'], not_cancelled: [] }),
      page([])
    ]);
    expect(await api.cancelAllWaiting(2)).toBe(3);
    expect(calls.map(c => c.path)).toEqual([
      'tasks?status=PENDING%2CRETRY&limit=2&offset=0',
      'tasks/cancel',
      'tasks?status=PENDING%2CRETRY&limit=2&offset=0',
      'tasks/cancel',
      'tasks?status=PENDING%2CRETRY&limit=2&offset=0'
    ]);
  });
});
