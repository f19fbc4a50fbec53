/**
 * The tail of a task's log, followed while the task runs: the sidebar's detail view (model.ts) and a
 * task output in a notebook (outputmodel.ts) read logs the same way. Each read appends what the log
 * gained since the last one (a long log is read from its tail), keeps the last `tail` characters, and
 * while the task runs reads again `interval` ms later: a log grows without any status change, so the
 * change feed says nothing of it. The text is kept as shown (logscreen.ts: a progress bar's `\r` frames
 * in place), the offsets as the server counts them. Imports nothing from JupyterLab.
 */

import { LogScreen } from './logscreen';
import type { LogChunk } from './types';

export class LogTail {
  private offset = 0;
  private readonly screen: LogScreen;
  private timer: ReturnType<typeof setTimeout> | null = null;

  /** `changed` is called after each read kept, or failed (with its error). */
  constructor(
    private readonly tail: number,
    private readonly interval: number,
    private readonly changed: (error: Error | null) => void
  ) {
    this.screen = new LogScreen(tail);
  }

  /** The log read so far as a terminal shows it (its last `tail` characters). */
  get text(): string {
    return this.screen.text;
  }

  /** Whether a next read is scheduled (the task ran at the last read). */
  get following(): boolean {
    return this.timer !== null;
  }

  /**
   * Reads once with `fetch` (the log from an offset). The answer is dropped when `current()` says it no
   * longer concerns what is shown; else it is kept, and while the log's task runs and `follow()` agrees,
   * the log is read again after the interval.
   */
  async read(fetch: (offset: number) => Promise<LogChunk>, current: () => boolean, follow: () => boolean): Promise<void> {
    this.stop();
    try {
      let chunk = await fetch(this.offset);
      if (!this.offset && chunk.size - chunk.next_offset > this.tail) {
        chunk = await fetch(chunk.size - this.tail); // a long log: start at its tail
      }
      if (!current()) {
        return;
      }
      if (chunk.reset) {
        this.screen.clear();
      }
      this.screen.write(chunk.data);
      this.offset = chunk.next_offset;
      this.stop();
      if (chunk.status === 'RUNNING' && follow()) {
        this.timer = setTimeout(() => {
          this.timer = null;
          void this.read(fetch, current, follow);
        }, this.interval);
      }
    } catch (error) {
      this.changed(error as Error);
      return;
    }
    this.changed(null);
  }

  /** Forgets the log (another task or attempt is shown next). */
  reset(): void {
    this.stop();
    this.screen.clear();
    this.offset = 0;
  }

  stop(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }
}
