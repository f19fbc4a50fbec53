import { describe, expect, it } from 'vitest';
import { TaskqApi } from '../src/api';
import { CELL_CLASS, CellMarker, cellMarks, markState, markTitle } from '../src/celltasks';
import { showsOwnerSwitch } from '../src/query';
import { warmLabel } from '../src/format';
import type { Task } from '../src/types';

const t = (status: string, notebook: string | null, cell_id: string | null) => ({ status, notebook, cell_id }) as Task;

describe('cellMarks', () => {
  it('counts the tasks of each cell of one notebook, matching recorded absolute paths', () => {
    const tasks = [
      t('RUNNING', '/home/ada/work/nb.ipynb', 'c1'),
      t('FAILED', 'work/nb.ipynb', 'c1'),
      t('COMPLETE', '/home/ada/work/nb.ipynb', 'c2'),
      t('COMPLETE', '/home/ada/work/other.ipynb', 'c1'),
      t('COMPLETE', null, null)
    ];
    const marks = cellMarks(tasks, 'work/nb.ipynb', '/home/ada');
    expect([...marks.keys()].sort()).toEqual(['c1', 'c2']);
    expect(marks.get('c1')).toEqual({ count: 2, active: 1, failed: 1 });
    expect(markState(marks.get('c1')!)).toBe('active');
    expect(markState(marks.get('c2')!)).toBe('done');
    expect(markState({ count: 1, active: 0, failed: 1 })).toBe('failed');
    expect(markTitle(marks.get('c1')!)).toBe('2 tasks from this cell, 1 waiting or running, 1 failed');
  });
});

describe('CellMarker', () => {
  it('reads the latest tasks once and marks, then unmarks, the open notebook\'s cells', async () => {
    let tasks = [t('COMPLETE', '/srv/nb.ipynb', 'a')];
    const paths: string[] = [];
    const api = new TaskqApi(async path => {
      paths.push(path);
      return new Response(JSON.stringify({ tasks, total: tasks.length, limit: 500, offset: 0 }));
    });
    const node = () => ({ classList: new Set<string>(), dataset: {} as Record<string, string>, title: '', removeAttribute() {} });
    const cells = ['a', 'b'].map(id => {
      const n = node();
      const el = {
        classList: { add: (c: string) => n.classList.add(c), remove: (c: string) => n.classList.delete(c), contains: (c: string) => n.classList.has(c) },
        dataset: n.dataset,
        set title(v: string) {
          n.title = v;
        },
        removeAttribute: () => (n.title = '')
      };
      return { model: { id }, node: el as unknown as HTMLElement, state: n };
    });
    const panel = { context: { path: 'nb.ipynb' }, content: { widgets: cells } };
    const marker = new CellMarker(api, () => [panel], () => '/srv');
    await marker.refresh();
    expect(paths).toEqual(['tasks?limit=500&offset=0']);
    expect(cells[0].state.classList.has(CELL_CLASS)).toBe(true);
    expect(cells[0].state.dataset.taskqTasks).toBe('1');
    expect(cells[0].state.title).toBe('1 task from this cell');
    expect(cells[1].state.classList.has(CELL_CLASS)).toBe(false);
    marker.apply(); // no new notebook: no request
    expect(paths.length).toBe(1);
    tasks = [];
    await marker.refresh();
    expect(cells[0].state.classList.has(CELL_CLASS)).toBe(false);
    expect(cells[0].state.dataset.taskqTasks).toBeUndefined();
  });

  it('reads nothing while no notebook is open', async () => {
    let calls = 0;
    const api = new TaskqApi(async () => {
      calls++;
      return new Response('{}');
    });
    await new CellMarker(api, () => [], () => '').refresh();
    expect(calls).toBe(0);
  });
});

describe('showsOwnerSwitch and warmLabel', () => {
  it('shows the switch only to someone who sees all, when there is more than one owner', () => {
    const admin = { you: { name: 'ada', sees_all: true } };
    expect(showsOwnerSwitch({ ...admin, users: { ada: {}, bob: {} } }, [])).toBe(true);
    expect(showsOwnerSwitch({ ...admin, users: { ada: {} } }, [{ owner: 'ada' }])).toBe(false);
    expect(showsOwnerSwitch({ ...admin, users: { ada: {}, '': {} } }, [])).toBe(false); // ownerless old tasks
    expect(showsOwnerSwitch({ ...admin, users: {} }, [{ owner: 'bob' }])).toBe(true);
    expect(showsOwnerSwitch({ you: { name: 'bob', sees_all: false }, users: { bob: {} } }, [{ owner: 'ada' }])).toBe(false);
    expect(showsOwnerSwitch({ users: { ada: {}, bob: {} } }, [])).toBe(false); // the server does not say who asks
  });

  it('labels a warm process with its function and idle time', () => {
    expect(warmLabel({ function: '__main__.fit_svc', idle_s: 12.4, keep_warm_seconds: 300 })).toBe('fit_svc · idle 12 s of 5 min 00 s');
    expect(warmLabel({ function: null, idle_s: 0, keep_warm_seconds: 60 })).toBe('? · idle 0.0 s of 1 min 00 s');
  });
});
