/**
 * The one line that sums a task up ("Task train · FAILED · attempt 2 of 3 · on gpu0 · ValueError: bad  [id]"),
 * filled in from TASK_LINE (generated.ts, from jupyter_taskq/taskline.py). The kernel writes the same line
 * with the same data: this file knows only the template language that taskline.py describes, not the line.
 */

import { TASK_LINE } from './generated';

const FIELD = /\{([^{}]+)\}/g;
const PLUS = /^(.*)\+(\d+)$/;

type Json = Record<string, unknown>;

function field(path: string, task: unknown): unknown {
  let value: unknown = task;
  for (const key of path.split('.')) {
    value = value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Json)[key] : undefined;
  }
  return value ?? null;
}

function valueOf(expression: string, task: unknown): unknown {
  const plus = PLUS.exec(expression);
  if (plus) {
    const n = valueOf(plus[1], task);
    return (typeof n === 'number' ? n : 0) + Number(plus[2]);
  }
  for (const path of expression.split('|')) {
    const found = field(path, task);
    if (found !== null && found !== '') {
      return found;
    }
  }
  return null;
}

function holds(condition: string, task: unknown): boolean {
  const at = condition.indexOf('!=');
  if (at >= 0) {
    return field(condition.slice(0, at), task) !== condition.slice(at + 2);
  }
  const found = field(condition, task);
  return typeof found === 'object' && found !== null ? Object.keys(found).length > 0 : Boolean(found);
}

function fill(template: string, task: unknown, cut: string[], cutAt: number): string {
  return template.replace(FIELD, (_all, expression: string) => {
    const value = valueOf(expression, task);
    const text = value === null ? '' : String(value);
    return cut.includes(expression) && text.length > cutAt ? `${text.slice(0, cutAt)}…` : text;
  });
}

/** The task's line; `cutAt`: the length a list line cuts the parts' `cut` fields to. */
export function taskLine(task: object, cutAt = Infinity): string {
  const parts = TASK_LINE.parts
    .filter(part => (part.when ?? []).every(condition => holds(condition, task)))
    .map(part => fill(part.text, task, part.cut ?? [], cutAt));
  return parts.join(TASK_LINE.separator) + fill(TASK_LINE.end, task, [], cutAt);
}
