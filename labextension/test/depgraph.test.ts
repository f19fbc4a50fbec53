import { describe, expect, it } from 'vitest';
import { buildTree, loadUpstream } from '../src/depgraph';
import type { Task } from '../src/types';

function t(id: string, after: string[] = [], status = 'COMPLETE'): Task {
  return { id, name: `n-${id}`, status, after } as unknown as Task;
}

/** A fake tasks-by-ids API over `all`, recording each call's ids. */
function fetcher(all: Task[]) {
  const byId = new Map(all.map(x => [x.id, x]));
  const calls: string[][] = [];
  const fetch = async (ids: string[]) => {
    calls.push(ids);
    return ids.map(id => byId.get(id) ?? ({ id, status: null } as unknown as Task));
  };
  return { fetch, calls };
}

describe('the dependency graph of a task', () => {
  it('reads the chain a level at a time and draws it indented, a shared task expanded once', async () => {
    // report after train and check; both after prepare; prepare after load
    const all = [t('train', ['prepare'], 'RUNNING'), t('check', ['prepare']), t('prepare', ['load']), t('load')];
    const root = t('report', ['train', 'check'], 'PENDING');
    const { fetch, calls } = fetcher(all);
    const upstream = await loadUpstream(root, fetch);
    expect(calls).toEqual([['train', 'check'], ['prepare'], ['load']]);
    const tree = buildTree(root, new Map(upstream.map(x => [x.id, x])));
    expect(tree.rows.map(r => [r.id, r.depth, r.task?.status, r.repeated])).toEqual([
      ['train', 1, 'RUNNING', false],
      ['prepare', 2, 'COMPLETE', false],
      ['load', 3, 'COMPLETE', false],
      ['check', 1, 'COMPLETE', false],
      ['prepare', 2, 'COMPLETE', true]
    ]);
    expect(tree.hidden).toBe(0);
  });

  it('stops at 5 levels and says what it left out', async () => {
    const chain = Array.from({ length: 8 }, (_, i) => t(`s${i}`, i < 7 ? [`s${i + 1}`] : []));
    const root = t('top', ['s0']);
    const { fetch, calls } = fetcher(chain);
    const upstream = await loadUpstream(root, fetch);
    expect(calls.length).toBe(5);
    const tree = buildTree(root, new Map(upstream.map(x => [x.id, x])));
    expect(tree.rows.map(r => r.id)).toEqual(['s0', 's1', 's2', 's3', 's4']);
    expect(tree.rows[4].hidden).toBe(1);
    expect(tree.hidden).toBe(1);
  });

  it('reads and draws at most 50 tasks of a wide fan-in', async () => {
    const deps = Array.from({ length: 120 }, (_, i) => t(`d${i}`));
    const root = t('sum', deps.map(d => d.id));
    const { fetch, calls } = fetcher(deps);
    const upstream = await loadUpstream(root, fetch);
    expect(calls).toHaveLength(1);
    expect(calls[0]).toHaveLength(50);
    const tree = buildTree(root, new Map(upstream.map(x => [x.id, x])));
    expect(tree.rows).toHaveLength(50);
    expect(tree.hidden).toBe(70);
  });

  it('shows a deleted dependency by its id with no status', async () => {
    const root = t('c', ['gone']);
    const { fetch } = fetcher([]);
    const tree = buildTree(root, new Map((await loadUpstream(root, fetch)).map(x => [x.id, x])));
    expect(tree.rows).toHaveLength(1);
    expect(tree.rows[0].task?.status).toBeNull();
  });
});
