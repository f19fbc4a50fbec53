import { describe, expect, it } from 'vitest';
import { ChangePoller } from '../src/poller';
import type { Changes } from '../src/types';

/** A fake `changes` endpoint fed answers by the test; the poller stops once they run out. */
function fakeApi(answers: (Changes | Error)[]) {
  const calls: { since: string; wait: number }[] = [];
  let poller: ChangePoller;
  const api = {
    async changes(since: string, wait: number): Promise<Changes> {
      calls.push({ since, wait });
      const next = answers.shift();
      if (!next) {
        void poller.stop();
        return { cursor: since, changed: [] };
      }
      if (next instanceof Error) {
        throw next;
      }
      return next;
    }
  };
  const sleeps: number[] = [];
  poller = new ChangePoller(api, { wait: 25, backoff: 100, sleep: async ms => void sleeps.push(ms) });
  return { poller, calls, sleeps, done: () => new Promise(r => setTimeout(r, 20)) };
}

describe('ChangePoller', () => {
  it('asks for a cursor at once, then long-polls from it and reports changes', async () => {
    const { poller, calls, done } = fakeApi([
      { cursor: 'e.0', changed: null },
      { cursor: 'e.0', changed: [] },
      { cursor: 'e.2', changed: ['a', 'b'] }
    ]);
    const seen: (string[] | null)[] = [];
    poller.onChange(c => seen.push(c));
    poller.start();
    await done();
    expect(calls.slice(0, 4)).toEqual([
      { since: '', wait: 0 },
      { since: 'e.0', wait: 25 },
      { since: 'e.0', wait: 25 },
      { since: 'e.2', wait: 25 }
    ]);
    expect(seen).toEqual([null, ['a', 'b']]);
    expect(poller.isRunning).toBe(false);
  });

  it('backs off after failures, reports them, and clears the error once it answers again', async () => {
    const { poller, sleeps, done } = fakeApi([new Error('down'), new Error('still down'), { cursor: 'e.5', changed: null }]);
    const errors: (string | null)[] = [];
    poller.onError(e => errors.push(e ? e.message : null));
    poller.start();
    await done();
    expect(errors).toEqual(['down', 'still down', null]);
    expect(sleeps.slice(0, 2)).toEqual([100, 200]);
  });

  it('resumes from its old cursor after a pause', async () => {
    const { poller, calls, done } = fakeApi([{ cursor: 'e.7', changed: null }]);
    poller.start();
    await done();
    poller.start();
    await done();
    expect(calls.map(c => c.since)).toContain('e.7');
  });
});
