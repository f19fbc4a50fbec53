/**
 * Hearing about changes without hammering the server: one long-poll of `GET changes?since=&wait=`
 * at a time. The server answers the moment a task changes, so the panel is live within a second,
 * and an idle queue costs one open request per `wait` seconds. Paused, it sends nothing.
 */

import type { TaskqApi } from './api';

export interface PollerOptions {
  /** Seconds the server may hold one long-poll. */
  wait?: number;
  /** Back-off after a failed poll, in ms (doubled up to `maxBackoff`). */
  backoff?: number;
  maxBackoff?: number;
  /** ms between an answer that reported changes and the next poll: a busy queue costs at most a few requests a second. */
  minInterval?: number;
  sleep?: (ms: number) => Promise<void>;
}

/** `changed` is the list of changed task ids, or null for "anything may have changed". */
export type ChangeListener = (changed: string[] | null) => void;
export type ErrorListener = (error: Error | null) => void;

const defaultSleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms));

export class ChangePoller {
  private cursor = '';
  private running = false;
  private controller: AbortController | null = null;
  private loop: Promise<void> | null = null;
  private readonly listeners = new Set<ChangeListener>();
  private readonly errorListeners = new Set<ErrorListener>();
  private readonly wait: number;
  private readonly backoff: number;
  private readonly maxBackoff: number;
  private readonly minInterval: number;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(
    private readonly api: Pick<TaskqApi, 'changes'>,
    options: PollerOptions = {}
  ) {
    this.wait = options.wait ?? 25;
    this.backoff = options.backoff ?? 1000;
    this.maxBackoff = options.maxBackoff ?? 30000;
    this.minInterval = options.minInterval ?? 200;
    this.sleep = options.sleep ?? defaultSleep;
  }

  get isRunning(): boolean {
    return this.running;
  }

  onChange(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onError(listener: ErrorListener): () => void {
    this.errorListeners.add(listener);
    return () => this.errorListeners.delete(listener);
  }

  /** Starts polling; the first answer (a fresh cursor) reports "anything may have changed". */
  start(): void {
    if (this.running) {
      return;
    }
    this.running = true;
    this.loop = this.run();
  }

  /** Stops polling and aborts the request in flight. */
  async stop(): Promise<void> {
    this.running = false;
    this.controller?.abort();
    await this.loop;
    this.loop = null;
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (this.running) {
      this.controller = new AbortController();
      try {
        // A resumed poller may have missed anything: ask with its old cursor, the server says.
        const answer = await this.api.changes(this.cursor, this.cursor ? this.wait : 0, this.controller.signal);
        if (!this.running) {
          break;
        }
        if (failures) {
          failures = 0;
          this.errorListeners.forEach(l => l(null));
        }
        this.cursor = answer.cursor;
        if (answer.changed === null || answer.changed.length) {
          this.listeners.forEach(l => l(answer.changed));
          await this.sleep(this.minInterval);
        }
      } catch (error) {
        if (!this.running) {
          break;
        }
        failures += 1;
        this.errorListeners.forEach(l => l(error as Error));
        await this.sleep(Math.min(this.maxBackoff, this.backoff * 2 ** (failures - 1)));
      }
    }
  }
}
