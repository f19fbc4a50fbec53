/**
 * The panel's state and everything that changes it: the current page of tasks (fetched from the
 * server with the filter; never the whole list), the queue stats, the open task's detail and log
 * tail, the selection, and the last error. Widgets only render it and call its methods; it imports
 * nothing from JupyterLab, so it is unit-tested in Node.
 */

import { ApiError, type TaskqApi } from './api';
import { failureCount } from './format';
import { LogTail } from './logtail';
import { ChangePoller, type PollerOptions } from './poller';
import { cancellableSelection, clampPage, showsOwnerSwitch, statusFilter } from './query';
import { loadUpstream } from './depgraph';
import { type ScheduleDraft, scheduleChanges } from './scheduleedit';
import type { Attempt, Schedule, Stats, Task, TaskPage } from './types';

export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface ModelOptions {
  pageSize?: number;
  /** Where "failures seen" survives a reload (window.localStorage in Lab). */
  storage?: KeyValueStore | null;
  poller?: PollerOptions;
  /** ms between log reads of a running task shown in the detail view. */
  logInterval?: number;
  /** Bytes of log shown at most. */
  logTail?: number;
}

const SEEN_KEY = 'jupyter-taskq:seen-failures';

export class QueueModel {
  readonly poller: ChangePoller;
  readonly pageSize: number;

  filterId = 'all';
  text = '';
  pageIndex = 0;
  /** A hub admin's "Mine / Everyone" (shown when `ownerSwitchShown`); everyone's by default. */
  ownerScope: 'mine' | 'everyone' = 'everyone';
  page: TaskPage | null = null;
  stats: Stats | null = null;
  error: string | null = null;
  /** A connection problem of the change feed (shown apart from action errors). */
  feedError: string | null = null;
  /** Why the server's queue did not start (its 503 message): the panel shows it instead of the table. */
  unavailable: string | null = null;
  loading = false;
  selected = new Set<string>();
  detailId: string | null = null;
  detail: Task | null = null;
  /** The open task's attempt history (read with its detail). */
  attempts: Attempt[] = [];
  /** The open task's dependencies (its `after`), each with its status now: its graph, one level up. */
  /** The open task's upstream chain as read (depgraph.ts: breadth first, bounded); components draw the tree. */
  upstream: Task[] = [];
  /** The schedules view: shown instead of the task table; its list. */
  showSchedules = false;
  schedules: Schedule[] = [];
  /** The schedule whose edit form is open, and the server's refusal of its last save. */
  editingSchedule: string | null = null;
  scheduleEditError: string | null = null;
  /** The attempt whose own log is shown (null: the latest attempt's, followed while it runs). */
  logAttempt: number | null = null;
  seenFailures: number | null = null;
  /** ms of the last page load (request to state), for the record. */
  lastLoadMs: number | null = null;
  /** Opens a task's notebook at its cell (wired by the plugin; absent in tests). */
  goToCell: ((notebook: string, cellId: string) => void) | null = null;

  private visible = false;
  private listeners = new Set<() => void>();
  private listController: AbortController | null = null;
  private listSeq = 0;
  private reloading: Promise<void> | null = null;
  private reloadAgain = false;
  private readonly logTail: LogTail;
  private readonly storage: KeyValueStore | null;

  constructor(
    readonly api: TaskqApi,
    options: ModelOptions = {}
  ) {
    this.pageSize = options.pageSize ?? 50;
    this.logTail = new LogTail(options.logTail ?? 64 * 1024, options.logInterval ?? 1000, error => {
      if (error) {
        this.error = error.message;
      }
      this.emit();
    });
    this.storage = options.storage ?? null;
    const seen = this.storage?.getItem(SEEN_KEY);
    this.seenFailures = seen !== null && seen !== undefined && !isNaN(Number(seen)) ? Number(seen) : null;
    this.poller = new ChangePoller(api, options.poller);
    this.poller.onChange(changed => void this.onChanges(changed));
    this.poller.onError(error => {
      this.feedError = error ? error.message : null;
      this.emit();
    });
  }

  /** Called whenever the state changed. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(): void {
    this.listeners.forEach(l => l());
  }

  /** The open task's log tail (the attempt's chosen with showAttemptLog). */
  get log(): string {
    return this.logTail.text;
  }

  get isVisible(): boolean {
    return this.visible;
  }

  /** The panel shows or hides: the table is only fetched while someone can see it. */
  setVisible(visible: boolean): void {
    if (visible === this.visible) {
      return;
    }
    this.visible = visible;
    if (visible) {
      this.markFailuresSeen();
      void this.loadPage();
      if (this.detailId) {
        void this.loadDetail(true);
      }
    } else {
      this.logTail.stop();
    }
  }

  markFailuresSeen(): void {
    if (!this.stats) {
      return;
    }
    this.seenFailures = failureCount(this.stats);
    this.storage?.setItem(SEEN_KEY, String(this.seenFailures));
    this.emit();
  }

  // -- filter and pages -------------------------------------------------
  setFilter(filterId: string): Promise<void> {
    this.filterId = statusFilter(filterId).id;
    this.pageIndex = 0;
    return this.loadPage();
  }

  setText(text: string): Promise<void> {
    this.text = text;
    this.pageIndex = 0;
    return this.loadPage();
  }

  /** "Mine": only the caller's own tasks (`GET tasks?owner=<stats.you.name>`); "Everyone": all they may see. */
  setOwnerScope(scope: 'mine' | 'everyone'): Promise<void> {
    this.ownerScope = scope;
    this.pageIndex = 0;
    return this.loadPage();
  }

  get ownerSwitchShown(): boolean {
    return showsOwnerSwitch(this.stats, this.page?.tasks ?? []);
  }

  setPage(pageIndex: number): Promise<void> {
    this.pageIndex = Math.max(0, pageIndex);
    return this.loadPage();
  }

  /** Reads the current page; a newer request wins over an older one still in flight. */
  async loadPage(): Promise<void> {
    this.listController?.abort();
    const controller = (this.listController = new AbortController());
    const seq = ++this.listSeq;
    const started = Date.now();
    this.loading = true;
    this.emit();
    try {
      let page = await this.api.list(this.query(), controller.signal);
      const clamped = clampPage(this.pageIndex, page.total, this.pageSize);
      if (clamped !== this.pageIndex && seq === this.listSeq) {
        this.pageIndex = clamped; // the list shrank under the page we were on
        page = await this.api.list(this.query(), controller.signal);
      }
      if (seq !== this.listSeq) {
        return;
      }
      this.page = page;
      const onPage = new Set(page.tasks.map(t => t.id));
      this.selected = new Set([...this.selected].filter(id => onPage.has(id)));
      this.error = null;
      this.unavailable = null;
      this.lastLoadMs = Date.now() - started;
    } catch (error) {
      if ((error as Error).name === 'AbortError' || seq !== this.listSeq) {
        return;
      }
      this.error = (error as Error).message;
      this.noteUnavailable(error);
    } finally {
      if (seq === this.listSeq) {
        this.loading = false;
        this.emit();
      }
    }
  }

  query() {
    return {
      statuses: statusFilter(this.filterId).statuses,
      text: this.text,
      limit: this.pageSize,
      offset: this.pageIndex * this.pageSize,
      owner: this.ownerScope === 'mine' ? (this.stats?.you?.name ?? null) : null
    };
  }

  async loadStats(): Promise<void> {
    try {
      this.stats = await this.api.stats();
      this.unavailable = null;
      if (this.seenFailures === null || (this.visible && failureCount(this.stats) !== this.seenFailures)) {
        this.markFailuresSeen(); // first look, or the panel is open: nothing is unseen
      }
    } catch (error) {
      this.error = (error as Error).message;
      this.noteUnavailable(error);
    }
    this.emit();
  }

  /** A 503 says the queue did not start (a bad option, a database it will not open): nothing to list. */
  private noteUnavailable(error: unknown): void {
    if (error instanceof ApiError && error.status === 503) {
      this.unavailable = error.message;
    }
  }

  /** Everything again (the Refresh command). */
  refresh(): Promise<void> {
    return Promise.all([this.loadStats(), this.visible ? this.loadPage() : null, this.detailId ? this.loadDetail(false) : null]).then(
      () => undefined
    );
  }

  /**
   * The page again after a change, never aborting a read in flight for it: on a busy queue changes
   * come faster than a slow server lists a page, and each restart would leave the panel at
   * "Loading tasks…". A change during a read asks for one more read once it ends. (The user's own
   * filter, text and page changes still abort: their answer is the one wanted.)
   */
  reloadPage(): Promise<void> {
    if (this.reloading) {
      this.reloadAgain = true;
      return this.reloading;
    }
    const run = async (): Promise<void> => {
      do {
        this.reloadAgain = false;
        await this.loadPage();
      } while (this.reloadAgain);
    };
    this.reloading = run().finally(() => {
      this.reloading = null;
    });
    return this.reloading;
  }

  private async onChanges(changed: string[] | null): Promise<void> {
    const work: Promise<void>[] = [this.loadStats()];
    if (this.visible) {
      work.push(this.reloadPage());
      if (this.detailId && (changed === null || changed.includes(this.detailId))) {
        work.push(this.loadDetail(false));
      }
    }
    await Promise.all(work);
  }

  // -- selection and actions --------------------------------------------
  toggleSelected(taskId: string, on?: boolean): void {
    const select = on ?? !this.selected.has(taskId);
    if (select) {
      this.selected.add(taskId);
    } else {
      this.selected.delete(taskId);
    }
    this.emit();
  }

  selectAllOnPage(on: boolean): void {
    this.selected = on ? new Set(this.page?.tasks.map(t => t.id) ?? []) : new Set();
    this.emit();
  }

  /** Selected tasks that can still be cancelled. */
  get cancellableSelected(): string[] {
    return cancellableSelection(this.selected, this.page?.tasks ?? []);
  }

  /** Runs an action; its failure becomes the panel's error message, and the view is refreshed. */
  private async act<T>(action: () => Promise<T>): Promise<T | undefined> {
    try {
      const result = await action();
      this.error = null;
      return result;
    } catch (error) {
      this.error = (error as Error).message;
      this.emit();
      return undefined;
    } finally {
      void this.refresh();
    }
  }

  async cancel(taskIds: string[]): Promise<number> {
    if (!taskIds.length) {
      return 0;
    }
    const answer = await this.act(() => this.api.cancel(taskIds));
    if (answer) {
      taskIds.forEach(id => this.selected.delete(id));
      if (answer.not_cancelled.length && !answer.cancelled.length) {
        this.error = `Not cancelled: ${answer.not_cancelled.map(n => n.reason).join('; ')}`;
        this.emit();
      }
    }
    return answer ? answer.cancelled.length : 0;
  }

  cancelSelected(): Promise<number> {
    return this.cancel(this.cancellableSelected);
  }

  async cancelAllWaiting(): Promise<number> {
    return (await this.act(() => this.api.cancelAllWaiting())) ?? 0;
  }

  /**
   * Ends every warm task process (the worker tiles show them); answers how many workers were asked.
   * Workers drop them at their next heartbeat, which the change feed does not report: the stats are
   * read again until no tile shows one (5 s at most).
   */
  async dropWarm(): Promise<number> {
    const asked = (await this.act(() => this.api.dropWarm()))?.workers_asked ?? 0;
    for (let i = 0; i < 10 && asked; i++) {
      await this.loadStats();
      if (!this.stats?.workers.some(w => w.warm?.length)) {
        break;
      }
      await new Promise(resolve => setTimeout(resolve, 500));
    }
    return asked;
  }

  async retry(taskId: string): Promise<Task | undefined> {
    return this.act(() => this.api.retry(taskId));
  }

  async remove(taskId: string): Promise<void> {
    await this.act(() => this.api.remove(taskId));
    this.selected.delete(taskId);
    if (this.detailId === taskId) {
      this.closeDetail();
    }
  }

  /** Whether "Go to cell" can lead back to where the task was submitted. */
  canGoToCell(task: Pick<Task, 'notebook' | 'cell_id'>): boolean {
    return Boolean(this.goToCell && task.notebook && task.cell_id);
  }

  openCell(task: Pick<Task, 'notebook' | 'cell_id'>): void {
    if (this.goToCell && task.notebook && task.cell_id) {
      this.goToCell(task.notebook, task.cell_id);
    }
  }

  // -- schedules --------------------------------------------------------
  /** Shows (or leaves) the schedules view, reading the schedules. */
  toggleSchedules(show: boolean): Promise<void> {
    this.showSchedules = show;
    this.editingSchedule = null;
    this.scheduleEditError = null;
    this.emit();
    return show ? this.loadSchedules() : Promise.resolve();
  }

  async loadSchedules(): Promise<void> {
    try {
      this.schedules = await this.api.schedules();
      this.error = null;
    } catch (error) {
      this.error = (error as Error).message;
    }
    this.emit();
  }

  /** Pause or resume one schedule (it runs at its next due time after a resume). */
  async setSchedulePaused(scheduleId: string, paused: boolean): Promise<void> {
    try {
      const changed = await this.api.updateSchedule(scheduleId, { paused });
      this.schedules = this.schedules.map(s => (s.id === scheduleId ? changed : s));
      this.error = null;
    } catch (error) {
      this.error = (error as Error).message;
    }
    this.emit();
  }

  /** Opens the edit form of one schedule (closing any other); its error cleared. */
  editSchedule(scheduleId: string | null): void {
    this.editingSchedule = scheduleId;
    this.scheduleEditError = null;
    this.emit();
  }

  /**
   * Saves the edit form: sends what the draft changes (`PATCH schedules/{id}`) and closes the form; a
   * refusal (a bad cron expression, an interval out of range) keeps the form open with the server's message,
   * and the schedule as it was. Answers whether it saved.
   */
  async saveSchedule(scheduleId: string, draft: ScheduleDraft): Promise<boolean> {
    const current = this.schedules.find(s => s.id === scheduleId);
    if (!current) {
      return false;
    }
    const changes = scheduleChanges(current, draft);
    try {
      if (Object.keys(changes).length) {
        const changed = await this.api.updateSchedule(scheduleId, changes);
        this.schedules = this.schedules.map(s => (s.id === scheduleId ? changed : s));
      }
      this.editingSchedule = null;
      this.scheduleEditError = null;
      this.emit();
      return true;
    } catch (error) {
      this.scheduleEditError = error instanceof ApiError && error.status === 400 && error.detail ? error.detail : (error as Error).message;
      this.emit();
      return false;
    }
  }

  async deleteSchedule(scheduleId: string): Promise<void> {
    try {
      await this.api.deleteSchedule(scheduleId);
      this.schedules = this.schedules.filter(s => s.id !== scheduleId);
      this.error = null;
    } catch (error) {
      this.error = (error as Error).message;
    }
    this.emit();
  }

  // -- detail view ------------------------------------------------------
  openDetail(taskId: string): Promise<void> {
    this.detailId = taskId;
    this.detail = this.page?.tasks.find(t => t.id === taskId) ?? null;
    this.attempts = [];
    this.logTail.reset();
    this.logAttempt = null;
    this.emit();
    return this.loadDetail(true);
  }

  /**
   * Shows attempt `attempt`'s own log in the log area (null: back to the latest attempt's). Each
   * attempt keeps its log, so a retried task's earlier failure can still be read.
   */
  showAttemptLog(attempt: number | null): Promise<void> {
    if (!this.detailId) {
      return Promise.resolve();
    }
    this.logTail.reset();
    this.logAttempt = attempt;
    this.emit();
    return this.readLog();
  }

  closeDetail(): void {
    this.detailId = null;
    this.detail = null;
    this.attempts = [];
    this.upstream = [];
    this.logTail.reset();
    this.logAttempt = null;
    this.emit();
  }

  async loadDetail(withLog: boolean): Promise<void> {
    const taskId = this.detailId;
    if (!taskId) {
      return;
    }
    try {
      const [task, attempts] = await Promise.all([this.api.get(taskId), this.api.attempts(taskId).catch(() => null)]);
      if (this.detailId !== taskId) {
        return;
      }
      this.detail = task;
      this.attempts = attempts ?? this.attempts; // an older server has no attempt history: none shown
      const after = task.after ?? [];
      // The chain upstream, a level at a time within depgraph.ts's bounds (kept as it was if a read fails).
      this.upstream = after.length
        ? await loadUpstream(task, ids => this.api.tasksById(ids)).catch(() => this.upstream)
        : [];
      this.error = null;
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        this.error = `Task ${taskId} no longer exists.`;
        this.closeDetail();
        return;
      }
      this.error = (error as Error).message;
    }
    this.emit();
    if (withLog || this.detail?.status === 'RUNNING' || this.detail?.ended_at) {
      await this.readLog();
    }
  }

  /** Appends what the log gained since the last read, keeping only its tail. */
  async readLog(): Promise<void> {
    const taskId = this.detailId;
    const attempt = this.logAttempt;
    if (!taskId) {
      return;
    }
    await this.logTail.read(
      offset => this.api.logs(taskId, offset, attempt),
      () => this.detailId === taskId && this.logAttempt === attempt,
      () => this.visible && (attempt === null || attempt === this.detail?.attempt) // an older attempt's log is final
    );
  }

  dispose(): void {
    this.logTail.stop();
    this.listController?.abort();
    void this.poller.stop();
    this.listeners.clear();
  }
}
