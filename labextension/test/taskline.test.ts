// The front end's one-line task text against the cases tests/test_task_line.py holds the kernel's to.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { taskLine } from '../src/taskline';

interface Case {
  why: string;
  task: object;
  cut_at?: number;
  line: string;
}

const cases: Case[] = JSON.parse(readFileSync(new URL('./taskline-cases.json', import.meta.url), 'utf8'));

describe('taskLine', () => {
  for (const c of cases) {
    it(c.why, () => {
      expect(taskLine(c.task, c.cut_at ?? Infinity)).toBe(c.line);
    });
  }
});
