/**
 * The panel's React pieces: header (pool depths, worker tiles), toolbar (filters, bulk actions),
 * task table with pages, and the detail view. They render the QueueModel and call its methods;
 * confirmation dialogs come in through `confirm`, so the pieces stay free of shell wiring.
 */

import { closeIcon, deleteIcon, notebookIcon, refreshIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import {
  attemptLabel,
  deviceLabel,
  gpuHoldingLabel,
  groupWorkersByJob,
  jobGpusLabel,
  jobStateLabel,
  jobSummary,
  jobTimeLeftLabel,
  launcherName,
  launcherProblems,
  gpuRequestLabel,
  waitingForText,
  formatBytes,
  formatCreated,
  formatDuration,
  imageLabel,
  progressFraction,
  taskDuration,
  usageRows,
  warmLabel,
  workerLabel
} from './format';
import type { QueueModel } from './model';
import { STATUS_FILTERS, canCancel, canDelete, canRetry, pageCount, rangeLabel } from './query';
import { MAX_DEPTH, MAX_NODES, buildTree } from './depgraph';
import { type ScheduleDraft, draftOf } from './scheduleedit';
import type { Schedule, Stats, Task, WorkerInfo } from './types';

export type Confirm = (title: string, body: string, action: string) => Promise<boolean>;

export interface PanelProps {
  model: QueueModel;
  confirm: Confirm;
  now: number;
}

export function StatusChip({ status, label, className = '' }: { status: string; label?: string; className?: string }): JSX.Element {
  return <span className={`jtqp-chip jtqp-chip-${status.toLowerCase()} ${className}`.trim()}>{label ?? status}</span>;
}

function ProgressBar({ task }: { task: Task }): JSX.Element | null {
  const fraction = progressFraction(task);
  if (fraction === null) {
    return task.progress?.message ? <span className="jtqp-muted">{task.progress.message}</span> : null;
  }
  const pct = Math.round(fraction * 100);
  return (
    <div
      className="jtqp-progress"
      role="progressbar"
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={pct}
      title={task.progress?.message ? `${pct}% · ${task.progress.message}` : `${pct}%`}
    >
      <div className="jtqp-progress-fill" style={{ width: `${pct}%` }} />
    </div>
  );
}

/** One live worker: its device, state, the task it runs (a link), and its warm task processes. */
function WorkerTile({ w, now, onOpen }: { w: WorkerInfo; now: number; onOpen: (id: string) => void }): JSX.Element {
  return (
    <div
      className={`jtqp-worker ${w.busy ? 'jtqp-worker-busy' : 'jtqp-worker-idle'}`}
      data-worker={w.name}
      title={`${w.name} · pid ${w.pid ?? '?'}${w.host ? ` · ${w.host}` : ''}`}
    >
      <div className="jtqp-worker-device">{deviceLabel(w)}</div>
      <div className="jtqp-worker-state">{w.busy ? 'busy' : w.lent ? 'lent' : 'idle'}</div>
      {gpuHoldingLabel(w) && <div className="jtqp-worker-gang jtqp-muted">{gpuHoldingLabel(w)}</div>}
      {!w.busy && w.lent && w.gpu_task && (
        <button className="jtqp-link jtqp-worker-task" onClick={() => onOpen(w.gpu_task!)}>
          {w.gpu_task_name || w.gpu_task.slice(0, 8)}
        </button>
      )}
      {w.busy && w.current_task && (
        <button className="jtqp-link jtqp-worker-task" onClick={() => onOpen(w.current_task!)}>
          {w.current_task_name || w.current_task.slice(0, 8)}
        </button>
      )}
      {w.busy && w.busy_since && (
        <div className="jtqp-muted">{formatDuration(Math.max(0, now - Date.parse(w.busy_since)) / 1000)}</div>
      )}
      {(w.warm ?? []).map((p, i) => (
        <div
          key={i}
          className="jtqp-warm"
          data-function={p.function ?? ''}
          title={`warm task process for ${p.function ?? '?'}${p.cwd ? ` (in ${p.cwd})` : ''}: idle ${formatDuration(
            p.idle_s
          )}, kept ${formatDuration(p.keep_warm_seconds)} idle at most${p.attempts ? `, ${p.attempts} attempt(s) so far` : ''}`}
        >
          ♨ {warmLabel(p)}
        </div>
      ))}
    </div>
  );
}

/**
 * Pool depths and one tile per live worker; with a launcher (Slurm), one tile per batch job (id, state
 * with Slurm's reason, node, GPUs, time left) holding the tiles of the workers that run in it.
 */
export function QueueHeader({
  stats,
  now,
  onOpen,
  onDropWarm
}: {
  stats: Stats | null;
  now: number;
  onOpen: (id: string) => void;
  onDropWarm?: () => void;
}): JSX.Element {
  if (!stats) {
    return <div className="jtqp-header jtqp-muted">Loading the queue…</div>;
  }
  const workers = stats.workers.filter(w => w.alive);
  const launcher = stats.launcher;
  const groups = groupWorkersByJob(workers, launcher);
  const warmCount = workers.reduce((n, w) => n + (w.warm?.length ?? 0), 0);
  return (
    <div className="jtqp-header">
      <div className="jtqp-depths" aria-label="Queue depth per pool">
        {Object.entries(stats.queue_depth).map(([pool, depth]) => (
          <span key={pool} className="jtqp-depth" data-pool={pool}>
            <b>{pool.toUpperCase()}</b> queue <span className="jtqp-depth-n">{depth}</span>
          </span>
        ))}
      </div>
      <div className="jtqp-workers" aria-label="Workers">
        {workers.length === 0 && groups.jobs.length === 0 && <span className="jtqp-muted">No live workers</span>}
        {groups.jobs.map(({ job, workers: jobWorkers }) => (
          <div
            key={`job-${job.id}`}
            className={`jtqp-job jtqp-job-${job.state}`}
            data-job={job.id}
            title={jobSummary(job, launcher!.kind)}
          >
            <div className="jtqp-job-head">
              <span className="jtqp-job-id">
                {launcherName(launcher!.kind)} {job.id}
              </span>{' '}
              <span className="jtqp-job-state">{jobStateLabel(job)}</span>
            </div>
            <div className="jtqp-job-meta jtqp-muted">
              {[job.node ?? '', jobGpusLabel(job), jobTimeLeftLabel(job)].filter(Boolean).join(' · ')}
            </div>
            {jobWorkers.length > 0 && (
              <div className="jtqp-job-workers">{jobWorkers.map(w => <WorkerTile key={w.name} w={w} now={now} onOpen={onOpen} />)}</div>
            )}
          </div>
        ))}
        {groups.others.map(w => (
          <WorkerTile key={w.name} w={w} now={now} onOpen={onOpen} />
        ))}
        {warmCount > 0 && onDropWarm && (
          <button
            className="jtqp-button jtqp-drop-warm"
            title="End every warm task process (keep_warm_seconds); the next task of each function starts afresh"
            onClick={onDropWarm}
          >
            Drop warm processes ({warmCount})
          </button>
        )}
      </div>
      {launcherProblems(launcher).map(problem => (
        <div key={problem} className="jtqp-launcher-problem" role="alert">
          {problem}
        </div>
      ))}
      <UsageSection stats={stats} />
    </div>
  );
}

/** Per user (issue 15): GPU time today and this week, and tasks by status; hidden when the server sends none. */
function UsageSection({ stats }: { stats: Stats }): JSX.Element | null {
  const rows = usageRows(stats);
  if (rows.length === 0) {
    return null;
  }
  return (
    <div className="jtqp-usage" aria-label="Usage">
      <div className="jtqp-usage-title">Usage</div>
      {rows.map(r => (
        <div
          key={r.name}
          className={`jtqp-usage-row${r.you ? ' jtqp-usage-you' : ''}`}
          data-user={r.name}
          title="GPU time since 00:00 UTC today and since Monday 00:00 UTC; tasks by status"
        >
          <span className="jtqp-usage-name">{r.name || '(no owner)'}</span>
          <span className="jtqp-usage-gpu">
            GPU <span className="jtqp-usage-today">{r.today}</span> today ·{' '}
            <span className="jtqp-usage-week">{r.week}</span> week
          </span>
          <span className="jtqp-usage-tasks">
            {r.running} running · {r.queued} queued · {r.failed} failed
          </span>
        </div>
      ))}
    </div>
  );
}

/** Status and text filters, refresh, and the bulk actions. */
export function Toolbar({ model, confirm }: PanelProps): JSX.Element {
  const [text, setText] = React.useState(model.text);
  React.useEffect(() => {
    if (text === model.text) {
      return;
    }
    const timer = setTimeout(() => void model.setText(text), 150); // one request per pause in typing
    return () => clearTimeout(timer);
  }, [text]);
  const selected = model.cancellableSelected;
  const cancelSelected = async () => {
    if (await confirm('Cancel selected tasks', `Cancel ${selected.length} selected task(s)?`, 'Cancel tasks')) {
      await model.cancelSelected();
    }
  };
  const cancelPending = async () => {
    if (await confirm('Cancel all pending tasks', 'Cancel every task that is waiting (PENDING or RETRY)?', 'Cancel all pending')) {
      await model.cancelAllWaiting();
    }
  };
  return (
    <div className="jtqp-toolbar">
      <select
        className="jtqp-status-filter"
        aria-label="Filter by status"
        value={model.filterId}
        onChange={e => void model.setFilter(e.target.value)}
      >
        {STATUS_FILTERS.map(f => (
          <option key={f.id} value={f.id}>
            {f.label}
          </option>
        ))}
      </select>
      <input
        className="jtqp-text-filter"
        type="search"
        aria-label="Filter by name or id"
        placeholder="Filter by name or id"
        value={text}
        onChange={e => setText(e.target.value)}
      />
      {model.ownerSwitchShown && (
        <span className="jtqp-owner-switch" role="group" aria-label="Whose tasks">
          {(['mine', 'everyone'] as const).map(scope => (
            <button
              key={scope}
              className={`jtqp-button jtqp-owner-${scope}${model.ownerScope === scope ? ' jtqp-owner-on' : ''}`}
              aria-pressed={model.ownerScope === scope}
              title={scope === 'mine' ? `Only ${model.stats?.you?.name ?? 'your'}'s tasks` : "Every user's tasks"}
              onClick={() => void model.setOwnerScope(scope)}
            >
              {scope === 'mine' ? 'Mine' : 'Everyone'}
            </button>
          ))}
        </span>
      )}
      <button className="jtqp-button jtqp-refresh" onClick={() => void model.refresh()} title="Refresh">
        ⟳
      </button>
      <button className="jtqp-button jtqp-cancel-selected" disabled={!selected.length} onClick={() => void cancelSelected()}>
        Cancel selected{selected.length ? ` (${selected.length})` : ''}
      </button>
      <button className="jtqp-button jtqp-cancel-pending" onClick={() => void cancelPending()}>
        Cancel all pending
      </button>
    </div>
  );
}

/** Cancel / Retry / Delete as the status allows: icon buttons in a table row, labelled in the detail view. */
function RowActions({
  task,
  model,
  confirm,
  compact = false
}: {
  task: Task;
  model: QueueModel;
  confirm: Confirm;
  compact?: boolean;
}): JSX.Element {
  const stop = (e: React.SyntheticEvent) => e.stopPropagation();
  const remove = async () => {
    if (await confirm('Delete task', `Delete task ${task.name || task.id} and its files?`, 'Delete')) {
      await model.remove(task.id);
    }
  };
  const button = (cls: string, label: string, icon: typeof closeIcon, onClick: () => void) => (
    <button
      className={`jtqp-button ${cls}${compact ? ' jtqp-icon-button' : ''}`}
      aria-label={`${label} ${task.name || task.id}`}
      title={label}
      onClick={onClick}
    >
      {compact ? <icon.react tag="span" elementSize="small" /> : label}
    </button>
  );
  return (
    <span className="jtqp-actions" onClick={stop} onKeyDown={stop}>
      {model.canGoToCell(task) && button('jtqp-go-to-cell', 'Go to cell', notebookIcon, () => model.openCell(task))}
      {canCancel(task) && button('jtqp-row-cancel', 'Cancel', closeIcon, () => void model.cancel([task.id]))}
      {canRetry(task) && button('jtqp-row-retry', 'Retry', refreshIcon, () => void model.retry(task.id))}
      {canDelete(task) && button('jtqp-row-delete', 'Delete', deleteIcon, () => void remove())}
    </span>
  );
}

/** One page of tasks, newest first, with page navigation. */
export function TaskTable({ model, confirm, now }: PanelProps): JSX.Element {
  const page = model.page;
  if (!page) {
    return <div className="jtqp-empty jtqp-muted">{model.loading ? 'Loading tasks…' : 'No tasks loaded.'}</div>;
  }
  const pages = pageCount(page.total, model.pageSize);
  const allSelected = page.tasks.length > 0 && page.tasks.every(t => model.selected.has(t.id));
  return (
    <div className="jtqp-table-wrap">
      <table className="jtqp-table" aria-label="Tasks, newest first" aria-busy={model.loading}>
        <thead>
          <tr>
            <th>
              <input
                type="checkbox"
                aria-label="Select all tasks on this page"
                checked={allSelected}
                onChange={e => model.selectAllOnPage(e.target.checked)}
              />
            </th>
            <th>Name</th>
            <th>Status</th>
            <th>Owner</th>
            <th>Worker</th>
            <th title="attempt n of m">Try</th>
            <th>Created</th>
            <th>Took</th>
            <th>Progress</th>
            <th>
              <span className="jtqp-sr-only">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {page.tasks.map(task => (
            <tr
              key={task.id}
              className="jtqp-row"
              data-task-id={task.id}
              data-status={task.status}
              tabIndex={0}
              aria-label={`${task.name || task.id} ${task.status}; press Enter for details`}
              onClick={() => void model.openDetail(task.id)}
              onKeyDown={e => {
                if (e.key === 'Enter' && e.target === e.currentTarget) {
                  e.preventDefault(); // else the same Enter would press the detail view's focused Back button
                  void model.openDetail(task.id);
                }
              }}
            >
              <td onClick={e => e.stopPropagation()}>
                <input
                  type="checkbox"
                  aria-label={`Select ${task.name || task.id}`}
                  checked={model.selected.has(task.id)}
                  onChange={e => model.toggleSelected(task.id, e.target.checked)}
                />
              </td>
              <td className="jtqp-name" title={task.id}>
                {task.name || task.id.slice(0, 8)}
              </td>
              <td>
                <StatusChip status={task.status} />
              </td>
              <td className="jtqp-owner">{task.owner ?? ''}</td>
              <td className="jtqp-worker-cell" title={waitingForText(task) || undefined}>
                {workerLabel(task)}
              </td>
              <td className="jtqp-attempt">{attemptLabel(task)}</td>
              <td className="jtqp-created" title={task.created_at}>
                {formatCreated(task.created_at, now)}
              </td>
              <td className="jtqp-duration">{formatDuration(taskDuration(task, now))}</td>
              <td>
                <ProgressBar task={task} />
              </td>
              <td>
                <RowActions task={task} model={model} confirm={confirm} compact />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {page.tasks.length === 0 && <div className="jtqp-empty jtqp-muted">No tasks match.</div>}
      <div className="jtqp-pager">
        <button className="jtqp-button" aria-label="First page" disabled={model.pageIndex === 0} onClick={() => void model.setPage(0)}>
          «
        </button>
        <button
          className="jtqp-button jtqp-prev"
          aria-label="Previous page"
          disabled={model.pageIndex === 0}
          onClick={() => void model.setPage(model.pageIndex - 1)}
        >
          ‹
        </button>
        <span className="jtqp-range">{rangeLabel(page.offset, page.tasks.length, page.total)}</span>
        <button
          className="jtqp-button jtqp-next"
          aria-label="Next page"
          disabled={model.pageIndex >= pages - 1}
          onClick={() => void model.setPage(model.pageIndex + 1)}
        >
          ›
        </button>
        <button
          className="jtqp-button"
          aria-label="Last page"
          disabled={model.pageIndex >= pages - 1}
          onClick={() => void model.setPage(pages - 1)}
        >
          »
        </button>
      </div>
    </div>
  );
}

function Field({ label, children }: { label: string; children: React.ReactNode }): JSX.Element | null {
  if (children === null || children === undefined || children === '') {
    return null;
  }
  return (
    <>
      <dt>{label}</dt>
      <dd>{children}</dd>
    </>
  );
}

/** One task in full: fields, progress, error traceback, outputs, live log tail. */
/** image=: the spec a task asked for, and once its worker has it, the image's hash and resolved packages. */
export function ImageSection({ task }: { task: Task }): JSX.Element | null {
  const spec = task.image;
  if (!spec) {
    return null;
  }
  const env = task.environment;
  const asked = imageLabel(spec);
  return (
    <div className="jtqp-image">
      <div className="jtqp-section">Image</div>
      <dl className="jtqp-fields">
        <Field label="spec">{asked}</Field>
        {spec.commands.length > 0 && <Field label="commands">{spec.commands.join(' && ')}</Field>}
        <Field label="hash">{env ? <code title={env.hash}>{env.hash.slice(0, 12)}</code> : 'not built yet'}</Field>
        <Field label="Python">{env?.python ?? null}</Field>
      </dl>
      {env && env.packages.length > 0 && (
        <details className="jtqp-image-packages">
          <summary>{env.packages.length} packages</summary>
          <pre>{env.packages.join('\n')}</pre>
        </details>
      )}
    </div>
  );
}

export function DetailView({ model, confirm, now }: PanelProps): JSX.Element {
  const task = model.detail;
  const back = (
    <button className="jtqp-button jtqp-back" onClick={() => model.closeDetail()} autoFocus>
      ← All tasks
    </button>
  );
  if (!task) {
    return (
      <div className="jtqp-detail">
        {back}
        <div className="jtqp-muted">Loading task…</div>
      </div>
    );
  }
  const iso = (v: string | null) => (v ? new Date(v).toLocaleString() : null);
  return (
    <div className="jtqp-detail" data-task-id={task.id}>
      <div className="jtqp-detail-head">
        {back}
        <span className="jtqp-detail-name">{task.name || task.id}</span>
        <StatusChip status={task.status} />
        <RowActions task={task} model={model} confirm={confirm} />
      </div>
      <ProgressBar task={task} />
      {task.progress?.message && <div className="jtqp-muted">{task.progress.message}</div>}
      <dl className="jtqp-fields">
        <Field label="id">{task.id}</Field>
        <Field label="status">{task.status}</Field>
        <Field label="attempt">{attemptLabel(task)}</Field>
        <Field label="worker">{workerLabel(task)}</Field>
        <Field label="GPU">{gpuRequestLabel(task)}</Field>
        <Field label="waiting for">{waitingForText(task) || null}</Field>
        <Field label="created">{iso(task.created_at)}</Field>
        <Field label="started">{iso(task.started_at)}</Field>
        <Field label="ended">{iso(task.ended_at)}</Field>
        <Field label="duration">{formatDuration(taskDuration(task, now))}</Field>
        <Field label="timeout">{task.timeout ? formatDuration(task.timeout) : null}</Field>
        <Field label="expires">{task.expires ? formatDuration(task.expires) : null}</Field>
        <Field label="owner">{task.owner ?? null}</Field>
        <Field label="priority">{String(task.priority)}</Field>
        <Field label="retry of">
          {task.retry_of ? (
            <button className="jtqp-link" onClick={() => void model.openDetail(task.retry_of!)}>
              {task.retry_of}
            </button>
          ) : null}
        </Field>
        <Field label="result">
          {task.result.available ? `available (${formatBytes(task.result.size)})` : task.result.expired ? 'expired' : null}
        </Field>
        <Field label="starts at">{task.status === 'PENDING' ? iso(task.start_at ?? null) : null}</Field>
        <Field label="schedule">{task.schedule_id ?? null}</Field>
        <Field label="webhook">{task.callback_url}</Field>
        <Field label="notebook">
          {task.notebook ? (
            <span className="jtqp-notebook" title={task.cell_id ? `${task.notebook}, cell ${task.cell_id}` : task.notebook}>
              {task.notebook.split(/[\\/]/).pop()}
            </span>
          ) : null}
        </Field>
      </dl>
      {task.error && (
        <div className="jtqp-error-box">
          <div className="jtqp-error-title">
            {task.error.type}: {task.error.message}
          </div>
          {task.error.traceback && <pre className="jtqp-traceback">{task.error.traceback}</pre>}
        </div>
      )}
      <Upstream model={model} task={task} />
      <AttemptList model={model} />
      <ImageSection task={task} />
      {task.outputs.length > 0 && (
        <div className="jtqp-outputs">
          <div className="jtqp-section">Outputs</div>
          {task.outputs.map(o => (
            <div key={o.name}>
              <a className="jtqp-download" href={o.url} download={o.name}>
                ⬇ {o.name}
              </a>{' '}
              <span className="jtqp-muted">{formatBytes(o.size)}</span>
            </div>
          ))}
        </div>
      )}
      <div className="jtqp-section jtqp-log-title">
        {model.logAttempt === null ? (
          <>
            Log{task.status === 'RUNNING' ? ' (live)' : ''}
            {task.log.dropped ? <span className="jtqp-muted"> · {formatBytes(task.log.dropped)} dropped</span> : null}
          </>
        ) : (
          <>
            Log of attempt {model.logAttempt}
            {model.logAttempt === task.attempt && task.status === 'RUNNING' ? ' (live)' : ''}{' '}
            <button className="jtqp-link jtqp-log-latest" onClick={() => void model.showAttemptLog(null)}>
              show the latest
            </button>
          </>
        )}
      </div>
      <pre className="jtqp-log" tabIndex={0} aria-label="Log tail">
        {model.log || '(empty)'}
      </pre>
    </div>
  );
}

/**
 * The open task's dependency graph upstream: what it runs after, what those run after, and so on (depgraph.ts
 * reads at most 5 levels and 50 tasks), as an indented tree, each task with its status now and a click away.
 * A task two stages share is drawn once in full, then marked "(above)". Its dependants are not shown: the
 * server keeps no index of what waits for a task (depgraph.ts says why).
 */
function Upstream({ model, task }: { model: QueueModel; task: Task }): JSX.Element | null {
  const after = task.after ?? [];
  if (!after.length) {
    return null;
  }
  const waiting = new Set(task.waiting_for ?? []);
  const tree = buildTree(task, new Map(model.upstream.map(t => [t.id, t])));
  return (
    <div className="jtqp-upstream">
      <div className="jtqp-section">
        Runs after {after.length} task{after.length === 1 ? '' : 's'}
        {waiting.size ? <span className="jtqp-muted"> · waiting for {waiting.size}</span> : null}
        {task.after_any_outcome ? <span className="jtqp-muted"> · whatever their outcome</span> : null}
      </div>
      <ul className="jtqp-upstream-list" role="tree" aria-label="Tasks it runs after">
        {tree.rows.map((node, i) => (
          <li
            key={`${i}:${node.id}`}
            data-upstream-id={node.id}
            data-depth={node.depth}
            role="treeitem"
            aria-level={node.depth}
            style={{ paddingLeft: `${(node.depth - 1) * 14}px` }}
          >
            {node.depth > 1 ? <span className="jtqp-muted">└ </span> : null}
            <StatusChip status={node.task?.status ?? 'LOST'} />{' '}
            <button className="jtqp-link" title={node.id} onClick={() => void model.openDetail(node.id)}>
              {node.task?.name || node.id}
            </button>
            {node.repeated ? <span className="jtqp-muted"> (above)</span> : null}
            {node.hidden ? <span className="jtqp-muted"> · after {node.hidden} more</span> : null}
          </li>
        ))}
      </ul>
      {tree.hidden ? (
        <div className="jtqp-muted jtqp-upstream-more">
          {tree.hidden} more not shown (the tree shows {MAX_DEPTH} levels, {MAX_NODES} tasks); open a task to see its own.
        </div>
      ) : null}
    </div>
  );
}

function scheduleWhen(s: Schedule): string {
  return s.cron ? `cron ${s.cron}` : `every ${formatDuration(s.every ?? 0)}`;
}

/** The schedules: when each runs, its last and next run, pause/resume and delete. */
export function SchedulesView({ model, confirm }: PanelProps): JSX.Element {
  const iso = (v: string | null) => (v ? new Date(v).toLocaleString() : '—');
  return (
    <div className="jtqp-schedules">
      <div className="jtqp-detail-head">
        <button className="jtqp-button jtqp-back" onClick={() => void model.toggleSchedules(false)} autoFocus>
          ← All tasks
        </button>
        <span className="jtqp-detail-name">Schedules</span>
        <button className="jtqp-button" onClick={() => void model.loadSchedules()} title="Read the schedules again">
          Refresh
        </button>
      </div>
      {model.schedules.length === 0 ? (
        <div className="jtqp-muted">No schedules. Make one in a notebook: f.every("1h") or f.schedule(cron="0 2 * * *").</div>
      ) : (
        <table className="jtqp-table">
          <thead>
            <tr>
              <th>name</th>
              <th>when</th>
              <th>next run</th>
              <th>runs</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {model.schedules.map(s => (
              <React.Fragment key={s.id}>
              <tr data-schedule-id={s.id} className={s.paused ? 'jtqp-paused' : ''}>
                <td title={s.id}>{s.name || s.function || s.id}</td>
                <td>{scheduleWhen(s)}</td>
                <td>{s.paused ? 'paused' : iso(s.next_run_at)}</td>
                <td>
                  {s.last_task ? (
                    <button className="jtqp-link" title="Open its last run" onClick={() => {
                      void model.toggleSchedules(false);
                      void model.openDetail(s.last_task!);
                    }}>
                      {s.runs}
                    </button>
                  ) : (
                    s.runs
                  )}
                </td>
                <td>
                  <button className="jtqp-button" onClick={() => void model.setSchedulePaused(s.id, !s.paused)}>
                    {s.paused ? 'Resume' : 'Pause'}
                  </button>{' '}
                  <button
                    className="jtqp-button jtqp-schedule-edit"
                    aria-expanded={model.editingSchedule === s.id}
                    onClick={() => model.editSchedule(model.editingSchedule === s.id ? null : s.id)}
                  >
                    Edit
                  </button>{' '}
                  <button
                    className="jtqp-button"
                    onClick={async () => {
                      if (await confirm('Delete schedule', `No more runs of ${s.name || s.function || s.id}; its runs so far stay.`, 'Delete')) {
                        void model.deleteSchedule(s.id);
                      }
                    }}
                  >
                    Delete
                  </button>
                </td>
              </tr>
              {model.editingSchedule === s.id ? (
                <tr className="jtqp-schedule-form-row">
                  <td colSpan={5}>
                    <ScheduleForm model={model} schedule={s} />
                  </td>
                </tr>
              ) : null}
              </React.Fragment>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

/**
 * Edits one schedule while it runs: its name, its timing (a cron expression or an interval) and what a run
 * missed while the server was down does. Saving sends only what changed; a value the server refuses keeps
 * the form open with the server's own message under it.
 */
function ScheduleForm({ model, schedule }: { model: QueueModel; schedule: Schedule }): JSX.Element {
  const [draft, setDraft] = React.useState<ScheduleDraft>(() => draftOf(schedule));
  const [saving, setSaving] = React.useState(false);
  const set = (changes: Partial<ScheduleDraft>) => setDraft(d => ({ ...d, ...changes }));
  const save = async (event: React.FormEvent) => {
    event.preventDefault();
    setSaving(true);
    await model.saveSchedule(schedule.id, draft);
    setSaving(false);
  };
  return (
    <form className="jtqp-schedule-form" onSubmit={e => void save(e)} aria-label="Edit schedule">
      <label>
        name{' '}
        <input className="jtqp-schedule-name" value={draft.name} placeholder={schedule.function ?? ''} maxLength={200}
          onChange={e => set({ name: e.target.value })} />
      </label>
      <label>
        <input type="radio" name={`mode-${schedule.id}`} checked={draft.mode === 'cron'} onChange={() => set({ mode: 'cron' })} /> cron{' '}
        <input className="jtqp-schedule-cron" value={draft.cron} placeholder="0 2 * * *" disabled={draft.mode !== 'cron'}
          onChange={e => set({ cron: e.target.value })} />
      </label>
      <label>
        <input type="radio" name={`mode-${schedule.id}`} checked={draft.mode === 'every'} onChange={() => set({ mode: 'every' })} /> every{' '}
        <input className="jtqp-schedule-every" value={draft.every} placeholder="seconds, or 15m, 1h" disabled={draft.mode !== 'every'}
          onChange={e => set({ every: e.target.value })} />
      </label>
      <label title="A run missed while the server was down: run it once when the server is back, or skip it">
        missed runs{' '}
        <select className="jtqp-schedule-catchup" value={draft.catch_up} onChange={e => set({ catch_up: e.target.value })}>
          <option value="once">run once</option>
          <option value="skip">skip</option>
        </select>
      </label>
      <button type="submit" className="jtqp-button jtqp-schedule-save" disabled={saving}>
        Save
      </button>{' '}
      <button type="button" className="jtqp-button" onClick={() => model.editSchedule(null)}>
        Cancel
      </button>
      {model.scheduleEditError ? (
        <div className="jtqp-schedule-error" role="alert">
          {model.scheduleEditError}
        </div>
      ) : null}
    </form>
  );
}

/** Every attempt of the open task: where it ran, when, and how it ended. */
function AttemptList({ model }: { model: QueueModel }): JSX.Element | null {
  if (!model.attempts.length) {
    return null;
  }
  const time = (v: string | null) => (v ? new Date(v).toLocaleTimeString() : '');
  return (
    <div className="jtqp-attempts">
      <div className="jtqp-section">Attempts</div>
      <table className="jtqp-attempt-table" aria-label="Attempts">
        <thead>
          <tr>
            <th>#</th>
            <th>Worker</th>
            <th>Device</th>
            <th>Start</th>
            <th>End</th>
            <th>Exit</th>
            <th>Error</th>
            <th>Log</th>
          </tr>
        </thead>
        <tbody>
          {model.attempts.map(a => (
            <tr
              key={a.attempt}
              className="jtqp-attempt"
              data-attempt={a.attempt}
              data-reason={a.reason ?? 'running'}
              data-shown={model.logAttempt === a.attempt ? 'true' : undefined}
            >
              <td>{a.attempt}</td>
              <td>{a.worker ?? ''}</td>
              <td>{a.device ?? ''}</td>
              <td title={a.started_at ?? undefined}>{time(a.started_at)}</td>
              <td title={a.ended_at ?? undefined}>{time(a.ended_at)}</td>
              <td className="jtqp-attempt-reason">{a.reason ?? 'running'}</td>
              <td className="jtqp-attempt-error" title={a.error?.traceback ?? undefined}>
                {a.error ? `${a.error.type}: ${a.error.message}` : ''}
              </td>
              <td>
                <button
                  className="jtqp-link jtqp-attempt-log"
                  title={`Show attempt ${a.attempt}'s own log below`}
                  aria-label={`Log of attempt ${a.attempt}`}
                  onClick={() => void model.showAttemptLog(a.attempt)}
                >
                  {a.log_size === undefined ? 'log' : a.log_size ? formatBytes(a.log_size) : 'empty'}
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** An error as a readable line that can be dismissed; never a blank panel. */
export function ErrorBanner({ message, onDismiss }: { message: string | null; onDismiss?: () => void }): JSX.Element | null {
  if (!message) {
    return null;
  }
  return (
    <div className="jtqp-error" role="alert">
      <span>{message}</span>
      {onDismiss && (
        <button className="jtqp-link" aria-label="Dismiss" onClick={onDismiss}>
          ✕
        </button>
      )}
    </div>
  );
}
