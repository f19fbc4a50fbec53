import { describe, expect, it } from 'vitest';
import { FinishNotifier, type Notice } from '../src/notifier';
import type { Task } from '../src/types';

const T0 = Date.parse('2026-01-01T10:00:00Z');
const at = (s: number) => new Date(T0 + s * 1000).toISOString();

function task(id: string, status: string, extra: Partial<Task> = {}): Task {
  return { id, name: `n-${id}`, status, ended_at: at(5), notebook: '/srv/work/a.ipynb', cell_id: 'c1', error: null, ...extra } as Task;
}

function memory() {
  const data = new Map<string, string>();
  return { getItem: (k: string) => data.get(k) ?? null, setItem: (k: string, v: string) => void data.set(k, v) };
}

function setup(tasks: Task[], front: string | null = null) {
  const notices: Notice[] = [];
  const reads: string[][] = [];
  const api = {
    async tasksById(ids: string[]) {
      reads.push(ids);
      return ids.map(id => tasks.find(t => t.id === id) ?? ({ id, status: null } as unknown as Task));
    }
  };
  const notifier = new FinishNotifier(api, {
    since: T0,
    storage: memory(),
    openNotebook: recorded => (recorded.startsWith('/srv/work/') ? recorded.slice('/srv/work/'.length) : null),
    inFront: path => path === front,
    notify: n => notices.push(n)
  });
  return { notifier, notices, reads };
}

describe('FinishNotifier', () => {
  it('tells once about a task from an open notebook that finished since the page loaded', async () => {
    const { notifier, notices } = setup([
      task('a', 'COMPLETE'),
      task('old', 'COMPLETE', { ended_at: at(-60) }),
      task('run', 'RUNNING', { ended_at: null }),
      task('script', 'COMPLETE', { notebook: null }),
      task('closed', 'COMPLETE', { notebook: '/elsewhere/b.ipynb' })
    ]);
    await notifier.onChanges(['a', 'old', 'run', 'script', 'closed']);
    await notifier.onChanges(['a']);
    expect(notices).toEqual([{ kind: 'success', message: 'Task n-a finished in a.ipynb.', notebook: '/srv/work/a.ipynb', taskId: 'a', cellId: 'c1' }]);
  });

  it('makes one notice per notebook for tasks ending together, with the first error', async () => {
    const error = { type: 'ValueError', message: 'bad input\nmore', traceback: null };
    const tasks = [task('a', 'COMPLETE'), task('b', 'FAILED', { error, cell_id: 'c9' }), task('c', 'COMPLETE')];
    const { notifier, notices } = setup(tasks);
    await notifier.onChanges(['a', 'b', 'c']);
    expect(notices).toHaveLength(1);
    expect(notices[0].kind).toBe('error');
    expect(notices[0].message).toBe('3 tasks finished in a.ipynb: 2 COMPLETE, 1 FAILED (first error: ValueError: bad input)');
    expect([notices[0].taskId, notices[0].cellId]).toEqual(['b', 'c9']);
  });

  it('stays quiet for the notebook in front, a muted notebook, or when turned off', async () => {
    const front = setup([task('a', 'FAILED')], 'a.ipynb');
    await front.notifier.onChanges(['a']);
    expect(front.notices).toEqual([]);

    const muted = setup([task('a', 'COMPLETE')]);
    muted.notifier.setMuted('a.ipynb', true);
    expect(muted.notifier.muted('a.ipynb')).toBe(true);
    await muted.notifier.onChanges(['a']);
    expect(muted.notices).toEqual([]);

    const none = setup([task('a', 'COMPLETE')]);
    (none.notifier as unknown as { options: { anyOpen: () => boolean } }).options.anyOpen = () => false;
    await none.notifier.onChanges(['a']);
    expect(none.reads).toEqual([]);

    const off = setup([task('a', 'COMPLETE')]);
    off.notifier.enabled = false;
    await off.notifier.onChanges(['a']);
    expect(off.notices).toEqual([]);
    expect(off.reads).toEqual([]);
  });
});
