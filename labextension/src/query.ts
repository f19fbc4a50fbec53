/** What the table asks the server for (filters and pages) and what a row may do. */

import { CANCELLABLE, FINAL, STATUSES, type Stats, type Task, type TaskStatus } from './types';

export interface StatusFilter {
  id: string;
  label: string;
  statuses: TaskStatus[];
}

/** The choices of the status filter: all, groups, then each status. */
export const STATUS_FILTERS: StatusFilter[] = [
  { id: 'all', label: 'All statuses', statuses: [] },
  { id: 'active', label: 'Active (pending, running, retry)', statuses: [...CANCELLABLE] },
  { id: 'ended', label: 'Ended', statuses: FINAL.filter(s => STATUSES.includes(s)) }, // LOST is never stored
  { id: 'failures', label: 'Failed or timed out', statuses: ['FAILED', 'TIMEOUT'] },
  ...STATUSES.map(s => ({ id: s, label: s.charAt(0) + s.slice(1).toLowerCase(), statuses: [s] }))
];

export function statusFilter(id: string): StatusFilter {
  return STATUS_FILTERS.find(f => f.id === id) ?? STATUS_FILTERS[0];
}

export function pageCount(total: number, pageSize: number): number {
  return Math.max(1, Math.ceil(total / pageSize));
}

/** A page index kept inside the pages that exist (the list can shrink under us). */
export function clampPage(pageIndex: number, total: number, pageSize: number): number {
  return Math.min(Math.max(0, pageIndex), pageCount(total, pageSize) - 1);
}

/** "1–50 of 10,000", or "no tasks". */
export function rangeLabel(offset: number, shown: number, total: number): string {
  if (!total) {
    return 'no tasks';
  }
  const fmt = (n: number) => n.toLocaleString('en-US');
  return `${fmt(offset + 1)}–${fmt(offset + shown)} of ${fmt(total)}`;
}

export const canCancel = (task: Pick<Task, 'status'>): boolean => CANCELLABLE.includes(task.status);
export const canRetry = (task: Pick<Task, 'status'>): boolean => FINAL.includes(task.status);
export const canDelete = canRetry;

/** Selected ids still cancellable on the page (a selection must not outlive its reason). */
export function cancellableSelection(selected: Iterable<string>, tasks: Task[]): string[] {
  const chosen = new Set(selected);
  return tasks.filter(t => chosen.has(t.id) && canCancel(t)).map(t => t.id);
}

/**
 * Whether the panel offers "Mine / Everyone": only to someone who sees every owner's tasks (a hub
 * admin; `stats.you`), and only when there is more than one owner to tell apart (per-user usage in
 * `stats.users`, or the owners on the page). A server that does not say who the caller is gets none.
 */
export function showsOwnerSwitch(stats: Pick<Stats, 'you' | 'users'> | null, tasks: Pick<Task, 'owner'>[]): boolean {
  if (!stats?.you?.sees_all) {
    return false;
  }
  const owners = new Set([stats.you.name, ...Object.keys(stats.users ?? {}), ...tasks.map(t => t.owner ?? '')]);
  owners.delete(''); // tasks from before owners were recorded belong to nobody in particular
  return owners.size > 1;
}
