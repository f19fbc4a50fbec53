import { describe, expect, it } from 'vitest';
import { TaskqApi } from '../src/api';
import { CELL_CLASS, CellMarker, cellMarks, markState, markTitle, recordedPaths } from '../src/celltasks';
import { showsOwnerSwitch } from '../src/query';
import { warmLabel } from '../src/format';

describe('cellMarks', () => {
  it('counts the tasks of each cell by state, from the server\'s counts by cell and status', () => {
    const marks = cellMarks({ c1: { RUNNING: 1, FAILED: 1, TIMEOUT: 2 }, c2: { COMPLETE: 3 }, c3: {} });
    expect([...marks.keys()].sort()).toEqual(['c1', 'c2']);
    expect(marks.get('c1')).toEqual({ count: 4, active: 1, failed: 3 });
    expect(markState(marks.get('c1')!)).toBe('active');
    expect(markState(marks.get('c2')!)).toBe('done');
    expect(markState({ count: 1, active: 0, failed: 1 })).toBe('failed');
    expect(markTitle({ count: 2, active: 1, failed: 1 })).toBe('2 tasks from this cell, 1 waiting or running, 1 failed');
  });

  it('asks for the notebook as the kernel records it (its file-system path) and as its server path', () => {
    expect(recordedPaths('work/nb.ipynb', '/home/ada')).toEqual(['work/nb.ipynb', '/home/ada/work/nb.ipynb']);
    expect(recordedPaths('nb.ipynb', '/srv/')).toEqual(['nb.ipynb', '/srv/nb.ipynb']);
    expect(recordedPaths('nb.ipynb', '')).toEqual(['nb.ipynb']);
    expect(recordedPaths('a/nb.ipynb', 'C:\\Users\\ada')).toEqual(['a/nb.ipynb', 'C:\\Users\\ada/a/nb.ipynb', 'C:\\Users\\ada\\a\\nb.ipynb']);
  });
});

function fakeCells(ids: string[]) {
  return ids.map(id => {
    const n = { classList: new Set<string>(), dataset: {} as Record<string, string>, title: '' };
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
}

describe('CellMarker', () => {
  it('reads each open notebook\'s counts once and marks, then unmarks, its cells', async () => {
    let cells: Record<string, Record<string, number>> = { a: { COMPLETE: 1 } };
    const paths: string[] = [];
    const api = new TaskqApi(async path => {
      paths.push(path);
      return new Response(JSON.stringify({ cells, total: 1 }));
    });
    const nodes = fakeCells(['a', 'b']);
    const panel = { context: { path: 'dir/nb.ipynb' }, content: { widgets: nodes } };
    const marker = new CellMarker(api, () => [panel], () => '/srv');
    await marker.refresh();
    expect(paths).toEqual(['tasks?notebook=dir%2Fnb.ipynb&notebook=%2Fsrv%2Fdir%2Fnb.ipynb']);
    expect(nodes[0].state.classList.has(CELL_CLASS)).toBe(true);
    expect(nodes[0].state.dataset.taskqTasks).toBe('1');
    expect(nodes[0].state.title).toBe('1 task from this cell');
    expect(nodes[1].state.classList.has(CELL_CLASS)).toBe(false);
    marker.apply(); // no new notebook: no request
    expect(paths.length).toBe(1);
    cells = {};
    await marker.refresh();
    expect(nodes[0].state.classList.has(CELL_CLASS)).toBe(false);
    expect(nodes[0].state.dataset.taskqTasks).toBeUndefined();
  });

  it('asks once per open notebook, and once more after changes that came while it read', async () => {
    const paths: string[] = [];
    let release: () => void = () => undefined;
    const api = new TaskqApi(async path => {
      paths.push(path);
      if (paths.length === 2) {
        await new Promise<void>(resolve => (release = resolve));
      }
      return new Response(JSON.stringify({ cells: { a: { RUNNING: 2 } }, total: 2 }));
    });
    const one = { context: { path: 'one.ipynb' }, content: { widgets: fakeCells(['a']) } };
    const two = { context: { path: 'two.ipynb' }, content: { widgets: fakeCells(['a']) } };
    const marker = new CellMarker(api, () => [one, two], () => '');
    const first = marker.refresh();
    void marker.refresh(); // while reading: one more round after, not two
    void marker.refresh();
    await new Promise(resolve => setTimeout(resolve, 0));
    release();
    await first;
    expect(paths).toEqual(['tasks?notebook=one.ipynb', 'tasks?notebook=two.ipynb', 'tasks?notebook=one.ipynb', 'tasks?notebook=two.ipynb']);
    expect(two.content.widgets[0].state.dataset.taskqState).toBe('active');
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
