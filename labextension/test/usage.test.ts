import { describe, expect, it } from 'vitest';
import { formatGpuTime, usageRows } from '../src/format';
import type { Stats } from '../src/types';

const users: Stats['users'] = {
  bob: { gpu_seconds_today: 42, gpu_seconds_week: 600, tasks: { RUNNING: 1, PENDING: 2, RETRY: 1, FAILED: 1, TIMEOUT: 1 } },
  alice: { gpu_seconds_today: 3720, gpu_seconds_week: 90000, tasks: { COMPLETE: 3 } },
  carol: { gpu_seconds_today: 0, gpu_seconds_week: 7200, tasks: {} }
};

describe('usage', () => {
  it('formats GPU time like durations, none as 0 s', () => {
    expect(formatGpuTime(3720)).toBe('1 h 02 min');
    expect(formatGpuTime(42)).toBe('42 s');
    expect(formatGpuTime(0)).toBe('0 s');
    expect(formatGpuTime(undefined)).toBe('0 s');
  });

  it('lists the caller first, then by GPU time this week, with counts by status', () => {
    const rows = usageRows({ users, you: { name: 'bob', sees_all: true } });
    expect(rows.map(r => r.name)).toEqual(['bob', 'alice', 'carol']);
    expect(rows[0]).toEqual({ name: 'bob', you: true, today: '42 s', week: '10 min 00 s', running: 1, queued: 3, failed: 2 });
    expect(rows[1]).toMatchObject({ you: false, today: '1 h 02 min', week: '25 h 00 min', running: 0, queued: 0, failed: 0 });
  });

  it('shows a normal user only their own line', () => {
    const rows = usageRows({ users, you: { name: 'carol', sees_all: false } });
    expect(rows.map(r => r.name)).toEqual(['carol']);
    expect(rows[0]).toMatchObject({ today: '0 s', week: '2 h 00 min' });
  });

  it('is empty (the section hides) without users', () => {
    expect(usageRows(null)).toEqual([]);
    expect(usageRows({})).toEqual([]);
    expect(usageRows({ users: {}, you: { name: 'bob', sees_all: true } })).toEqual([]);
  });
});
