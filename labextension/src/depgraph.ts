/**
 * The graph of a task's dependencies for its detail view (issue 24): the chain of tasks it runs after,
 * recursively, read a level at a time with the tasks-by-ids API and bounded (depth and node count), so a
 * task after 10,000 others or a deep pipeline costs a few small requests, never a walk of the queue.
 *
 * Only upstream: a task records what it waits for (`after`), not what waits for it, and the server keeps no
 * reverse index, so its dependants could only be found by reading every task; they are not shown.
 */

import type { Task } from './types';

/** How far up the chain the detail view reads and draws. */
export const MAX_DEPTH = 5;
/** Tasks read and rows drawn at most. */
export const MAX_NODES = 50;

/** One row of the drawn tree. */
export interface DepNode {
  id: string;
  /** The task as read (null: not read, beyond the bounds; a deleted task reads with `status: null`). */
  task: Task | null;
  /** 1: a direct dependency of the open task; 2: one of its dependencies; ... */
  depth: number;
  /** Drawn already higher in the tree (two stages after the same task): its own dependencies not repeated. */
  repeated: boolean;
  /** Dependencies of this task left undrawn by the bounds. */
  hidden: number;
}

export interface DepTree {
  rows: DepNode[];
  /** Rows left out in all (a dependency past the depth or node bound). */
  hidden: number;
}

/**
 * Reads the upstream chain of `root` a level at a time (`fetch`: the tasks-by-ids API): every dependency of
 * the tasks read so far that is not yet known, until `maxDepth` levels or `maxNodes` tasks. Breadth first,
 * so the nearest dependencies are read before a long chain uses the budget.
 */
export async function loadUpstream(
  root: Pick<Task, 'after'>,
  fetch: (ids: string[]) => Promise<Task[]>,
  maxDepth = MAX_DEPTH,
  maxNodes = MAX_NODES
): Promise<Task[]> {
  const known = new Map<string, Task>();
  let level = unique(root.after ?? []);
  for (let depth = 1; depth <= maxDepth && level.length; depth++) {
    const wanted = level.filter(id => !known.has(id)).slice(0, maxNodes - known.size);
    if (!wanted.length) {
      break;
    }
    const tasks = await fetch(wanted);
    tasks.forEach(t => known.set(t.id, t));
    level = unique(tasks.flatMap(t => t.after ?? []));
  }
  return [...known.values()];
}

/**
 * The rows of the indented tree under `root`, depth first in each task's `after` order, from the tasks read
 * (`known`). A task drawn before is drawn again where it recurs but marked `repeated` and not expanded; a
 * dependency past `maxDepth`, or past `maxNodes` rows, is counted in `hidden` (of its parent row and of all).
 */
export function buildTree(
  root: Pick<Task, 'id' | 'after'>,
  known: Map<string, Task>,
  maxDepth = MAX_DEPTH,
  maxNodes = MAX_NODES
): DepTree {
  const rows: DepNode[] = [];
  const drawn = new Set<string>([root.id]);
  let hidden = 0;
  const visit = (ids: string[], depth: number, parent: DepNode | null): void => {
    for (let i = 0; i < ids.length; i++) {
      if (depth > maxDepth || rows.length >= maxNodes) {
        hidden += ids.length - i;
        if (parent) {
          parent.hidden += ids.length - i;
        }
        return;
      }
      const id = ids[i];
      const task = known.get(id) ?? null;
      const node: DepNode = { id, task, depth, repeated: drawn.has(id), hidden: 0 };
      rows.push(node);
      if (!node.repeated) {
        drawn.add(id);
        visit(unique(task?.after ?? []), depth + 1, node);
      }
    }
  };
  visit(unique(root.after ?? []), 1, null);
  return { rows, hidden };
}

function unique(ids: string[]): string[] {
  return [...new Set(ids)];
}
