import { describe, expect, it } from 'vitest';
import { TaskqApi } from '../src/api';
import { QueueModel } from '../src/model';
import { draftOf, scheduleChanges } from '../src/scheduleedit';

function json(body: unknown, status = 200): Response {
  return new Response(status === 204 ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' }
  });
}

const schedule = {
  id: 's1', name: 'nightly', function: 'backup', owner: 'me', cron: '0 2 * * *', every: null, catch_up: 'once',
  paused: false, created_at: null, next_run_at: '2026-01-01T02:00:00.000Z', last_run_at: null, runs: 3, skipped: 0,
  last_task: 't3'
};

function fake(routes: Record<string, (init?: RequestInit) => Response>) {
  const calls: { path: string; method: string; body?: string }[] = [];
  const api = new TaskqApi(async (path: string, init?: RequestInit) => {
    calls.push({ path, method: init?.method ?? 'GET', body: init?.body as string | undefined });
    const route = Object.keys(routes).find(r => path.startsWith(r));
    if (!route) {
      throw new Error(`unexpected ${path}`);
    }
    return routes[route](init);
  });
  return { api, calls };
}

describe('schedules in the panel', () => {
  it('lists, pauses and deletes schedules through the REST API', async () => {
    const { api, calls } = fake({
      'schedules/s1': init =>
        init?.method === 'DELETE' ? json(null, 204) : json({ ...schedule, paused: JSON.parse(init!.body as string).paused }),
      schedules: () => json({ schedules: [schedule] })
    });
    const model = new QueueModel(api);
    await model.toggleSchedules(true);
    expect(model.showSchedules).toBe(true);
    expect(model.schedules.map(s => s.id)).toEqual(['s1']);
    await model.setSchedulePaused('s1', true);
    expect(model.schedules[0].paused).toBe(true);
    expect(calls[1]).toEqual({ path: 'schedules/s1', method: 'PATCH', body: '{"paused":true}' });
    await model.deleteSchedule('s1');
    expect(model.schedules).toEqual([]);
    expect(calls[2].method).toBe('DELETE');
  });

  it('shows a refusal as the error, keeping the list', async () => {
    const { api } = fake({
      'schedules/s1': () => json({ message: 'no schedule with id' }, 404),
      schedules: () => json({ schedules: [schedule] })
    });
    const model = new QueueModel(api);
    await model.loadSchedules();
    await model.setSchedulePaused('s1', true);
    expect(model.error).toContain('404 no schedule with id');
    expect(model.schedules).toHaveLength(1);
  });

  it("reads a task's dependencies with their statuses for its detail view", async () => {
    const task = { id: 'c', name: 'report', status: 'PENDING', after: ['a', 'b'], waiting_for: ['b'] };
    const { api } = fake({
      'tasks/c/attempts': () => json({ attempts: [] }),
      'tasks/c/logs': () => json({ data: '', offset: 0, next_offset: 0, size: 0 }),
      'tasks/c': () => json(task),
      'tasks/wait': () => json({ done: false, tasks: [{ id: 'a', status: 'COMPLETE' }, { id: 'b', status: 'RUNNING' }] })
    });
    const model = new QueueModel(api);
    await model.openDetail('c').catch(() => undefined);
    expect(model.upstream.map(t => [t.id, t.status])).toEqual([
      ['a', 'COMPLETE'],
      ['b', 'RUNNING']
    ]);
  });

  it('edits a schedule: only what changed is sent, and the form closes', async () => {
    const { api, calls } = fake({
      'schedules/s1': init => json({ ...schedule, ...JSON.parse(init!.body as string), cron: null, every: 900 }),
      schedules: () => json({ schedules: [schedule] })
    });
    const model = new QueueModel(api);
    await model.loadSchedules();
    model.editSchedule('s1');
    expect(model.editingSchedule).toBe('s1');
    const draft = { ...draftOf(model.schedules[0]), mode: 'every' as const, every: '15m', name: 'quarterly' };
    expect(await model.saveSchedule('s1', draft)).toBe(true);
    expect(calls[1]).toEqual({ path: 'schedules/s1', method: 'PATCH', body: '{"name":"quarterly","every":"15m"}' });
    expect(model.schedules[0].every).toBe(900);
    expect(model.editingSchedule).toBeNull();
  });

  it("keeps the form open with the server's 400 message, the schedule unchanged", async () => {
    const { api } = fake({
      'schedules/s1': () => json({ message: "bad cron field 'minute': 61 is out of 0-59", reason: 'bad request' }, 400),
      schedules: () => json({ schedules: [schedule] })
    });
    const model = new QueueModel(api);
    await model.loadSchedules();
    model.editSchedule('s1');
    expect(await model.saveSchedule('s1', { ...draftOf(schedule), cron: '61 * * * *' })).toBe(false);
    expect(model.scheduleEditError).toBe("bad cron field 'minute': 61 is out of 0-59");
    expect(model.editingSchedule).toBe('s1');
    expect(model.schedules[0]).toEqual(schedule);
  });

  it('makes the PATCH body from the draft', () => {
    const draft = draftOf(schedule);
    expect(scheduleChanges(schedule, draft)).toEqual({});
    expect(scheduleChanges(schedule, { ...draft, cron: ' 0  3 * * * ' })).toEqual({ cron: '0 3 * * *' });
    expect(scheduleChanges(schedule, { ...draft, mode: 'every', every: '3600' })).toEqual({ every: 3600 });
    expect(scheduleChanges(schedule, { ...draft, name: ' ' })).toEqual({ name: null });
    expect(scheduleChanges(schedule, { ...draft, catch_up: 'skip' })).toEqual({ catch_up: 'skip' });
    const every = { ...schedule, cron: null, every: 60 };
    expect(scheduleChanges(every, draftOf(every))).toEqual({});
    expect(scheduleChanges(every, { ...draftOf(every), mode: 'cron', cron: '*/5 * * * *' })).toEqual({ cron: '*/5 * * * *' });
  });
});
