/**
 * A log as a terminal would show it: a `\r` returns to the start of the line, so a progress bar's
 * frames (tqdm writes `\r` + the whole bar each update) overwrite one another in place instead of
 * running together; `\b` steps back one character; `\r\n` ends a line like `\n`.
 *
 * Where this happens, and why here: the server's log API (`GET taskq/api/tasks/{id}/logs`) and the
 * kernel's `h.logs()` answer the bytes exactly as printed, so an offset always means the same byte and a
 * follow that passes back `next_offset` appends exactly what came next (a notebook's output area and a
 * terminal draw `\r` themselves when `h.logs(follow=True)` prints). The Lab's log views (the sidebar's
 * detail and a task's output) read through LogTail (logtail.ts), which writes each chunk here: a frame
 * split across two reads, or a `\r` at one read's end, still lands on its line, because the line being
 * written and the cursor carry over from one write to the next. Imports nothing from JupyterLab.
 */

export class LogScreen {
  /** Finished lines, each ending in `\n`, at most `tail` characters (the oldest dropped). */
  private done = '';
  /** The line being written (no `\n` yet) and where the next character goes in it. */
  private line = '';
  private col = 0;

  constructor(private readonly tail: number) {}

  /** What is shown: the last `tail` characters of the finished lines and the line being written. */
  get text(): string {
    return (this.done + this.line).slice(-this.tail);
  }

  /** Appends what the log printed next. */
  write(data: string): void {
    let finished = '';
    // Runs of plain characters in one step: a long log costs one slice per run, not per character.
    const parts = data.split(/([\r\n\b])/);
    for (const part of parts) {
      if (part === '\n') {
        finished += this.line + '\n';
        this.line = '';
        this.col = 0;
      } else if (part === '\r') {
        this.col = 0;
      } else if (part === '\b') {
        this.col = Math.max(0, this.col - 1);
      } else if (part) {
        this.line = this.line.slice(0, this.col) + part + this.line.slice(this.col + part.length);
        this.col += part.length;
      }
    }
    if (finished) {
      this.done = (this.done + finished).slice(-this.tail);
    }
    if (this.line.length > this.tail) {
      // One endless line (no `\n` in megabytes): keep its end, where the cursor is in practice.
      const cut = this.line.length - this.tail;
      this.line = this.line.slice(cut);
      this.col = Math.max(0, this.col - cut);
    }
  }

  /** Forgets everything (another log, or the server restarted this one from its tail). */
  clear(): void {
    this.done = '';
    this.line = '';
    this.col = 0;
  }
}
