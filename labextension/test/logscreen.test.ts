import { describe, expect, it } from 'vitest';
import { LogScreen } from '../src/logscreen';
import { LogTail } from '../src/logtail';
import type { LogChunk } from '../src/types';

/** What tqdm prints for a 3-step loop on a task's stderr: `\r` + the whole bar at each update. */
const BAR = (n: number) => `\r${Math.round((n / 3) * 100)}%|${'#'.repeat(n)}${' '.repeat(3 - n)}| ${n}/3`;
const TQDM = 'start\n' + [0, 1, 2, 3].map(BAR).join('') + '\ndone\n';

describe('LogScreen', () => {
  it('shows a tqdm bar in place: its last frame, on one line', () => {
    const screen = new LogScreen(1000);
    screen.write(TQDM);
    expect(screen.text).toBe('start\n100%|###| 3/3\ndone\n');
  });

  it('overwrites like a terminal: a shorter frame keeps the end of a longer one; \\r\\n and \\b', () => {
    const screen = new LogScreen(1000);
    screen.write('abcdef\rxy\nwindows line\r\nab\bX\n');
    expect(screen.text).toBe('xycdef\nwindows line\naX\n');
  });

  it('carries the line and the cursor from one write to the next, whatever the split', () => {
    const whole = new LogScreen(1000);
    whole.write(TQDM);
    for (let cut = 0; cut <= TQDM.length; cut++) {
      const split = new LogScreen(1000);
      split.write(TQDM.slice(0, cut));
      split.write(TQDM.slice(cut));
      expect(split.text).toBe(whole.text);
    }
    const screen = new LogScreen(1000);
    screen.write('12%|#  |');
    expect(screen.text).toBe('12%|#  |'); // the bar shows while it runs
    screen.write('\r');
    expect(screen.text).toBe('12%|#  |'); // a frame's \r alone does not blank it
  });

  it('keeps the last `tail` characters of what is shown, not of the raw frames', () => {
    const screen = new LogScreen(30);
    screen.write('old line\n' + Array.from({ length: 500 }, (_, i) => `\r${i}`).join('') + '\nlast\n');
    expect(screen.text).toBe('old line\n499\nlast\n');
    screen.write('x'.repeat(100));
    expect(screen.text).toBe('x'.repeat(30));
    screen.clear();
    expect(screen.text).toBe('');
  });
});

describe('LogTail', () => {
  it('follows a running tqdm log by byte offsets and shows its frames in place', async () => {
    const log = TQDM;
    let status = 'RUNNING';
    const offsets: number[] = [];
    let cut = 0; // each read answers up to here: frames split anywhere
    const fetch = async (offset: number): Promise<LogChunk> => {
      offsets.push(offset);
      const data = log.slice(offset, cut);
      return { data, offset, next_offset: offset + data.length, size: cut, reset: false, dropped: 0, status } as LogChunk;
    };
    const tail = new LogTail(1000, 60000, () => undefined);
    for (const upto of [10, 17, 30, log.length]) {
      cut = upto;
      if (upto === log.length) {
        status = 'COMPLETE';
      }
      await tail.read(fetch, () => true, () => false);
    }
    expect(offsets).toEqual([0, 10, 17, 30]); // the server's offsets, untouched by what is shown
    expect(tail.text).toBe('start\n100%|###| 3/3\ndone\n');
    tail.reset();
    expect(tail.text).toBe('');
  });
});
