/**
 * A progress bar on stderr: redrawn in place on a terminal, a line every few seconds otherwise
 * (CI logs stay readable). Silent when `quiet`. Shows done/total, rate, ETA and custom fields.
 */
import type { BatchProgress, EpochStats } from '../training/train.js';

export interface ProgressOptions {
  label: string;
  total: number;
  quiet?: boolean;
  stream?: NodeJS.WriteStream;
  /** Minimum ms between non-TTY lines. */
  logEveryMs?: number;
}

export class Progress {
  private done = 0;
  private fields = '';
  private readonly start = Date.now();
  private lastDraw = 0;
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;
  private finished = false;

  constructor(private readonly opts: ProgressOptions) {
    this.stream = opts.stream ?? process.stderr;
    this.tty = Boolean(this.stream.isTTY);
  }

  /** Advances by `n` and sets the trailing fields (e.g. "loss 0.123 acc 97.1%"). */
  tick(n = 1, fields?: string): void {
    this.done = Math.min(this.opts.total, this.done + n);
    if (fields !== undefined) this.fields = fields;
    this.draw(false);
  }

  set(done: number, fields?: string): void {
    this.done = Math.min(this.opts.total, done);
    if (fields !== undefined) this.fields = fields;
    this.draw(false);
  }

  finish(fields?: string): void {
    if (this.finished) return;
    if (fields !== undefined) this.fields = fields;
    this.done = this.opts.total;
    this.draw(true);
    this.finished = true;
  }

  private draw(final: boolean): void {
    if (this.opts.quiet) return;
    const now = Date.now();
    const minGap = this.tty ? 100 : (this.opts.logEveryMs ?? 5000);
    if (!final && now - this.lastDraw < minGap) return;
    this.lastDraw = now;
    const { total, label } = this.opts;
    const elapsed = (now - this.start) / 1000;
    const frac = total > 0 ? this.done / total : 1;
    const eta = this.done > 0 ? (elapsed / this.done) * (total - this.done) : NaN;
    const width = 24;
    const filled = Math.round(frac * width);
    const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    const time = final ? `${fmtTime(elapsed)}` : `${fmtTime(elapsed)}<${Number.isFinite(eta) ? fmtTime(eta) : '?'}`;
    const line = `${label} ${bar} ${this.done}/${total} ${time}${this.fields ? '  ' + this.fields : ''}`;
    if (this.tty) this.stream.write(`\r\x1b[2K${line}${final ? '\n' : ''}`);
    else this.stream.write(line + '\n');
  }
}

export function fmtTime(s: number): string {
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/**
 * A progress bar for `trainModel`: pass `onBatch` to it, call `finish` with its history. Library
 * functions only report through callbacks; drawing is the caller's choice.
 */
export function trainingProgress(label: string, opts: { quiet?: boolean } = {}): {
  onBatch: (p: BatchProgress) => void;
  finish: (history: readonly EpochStats[]) => void;
} {
  let bar: Progress | null = null;
  const valText = (s?: EpochStats) => (s?.valLoss === undefined ? ''
    : `  | val loss ${s.valLoss.toPrecision(4)}${s.valAcc !== undefined ? ` acc ${(100 * s.valAcc).toFixed(1)}%` : ''}`);
  return {
    onBatch(p) {
      bar ??= new Progress({ label, total: p.epochs * p.batchesPerEpoch, quiet: opts.quiet });
      const acc = p.acc !== undefined ? `  acc ${(100 * p.acc).toFixed(1)}%` : '';
      bar.set((p.epoch - 1) * p.batchesPerEpoch + p.batch,
        `epoch ${p.epoch}/${p.epochs} batch ${p.batch}/${p.batchesPerEpoch}  loss ${p.loss.toPrecision(4)}${acc}${valText(p.lastEpoch)}`);
    },
    finish(history) {
      const end = history[history.length - 1];
      if (!bar || !end) return;
      const seconds = history.reduce((s, h) => s + h.seconds, 0);
      bar.finish(`loss ${end.trainLoss.toPrecision(4)}${end.trainAcc !== undefined ? ` acc ${(100 * end.trainAcc).toFixed(1)}%` : ''}${valText(end)}  (${fmtTime(seconds)})`);
    },
  };
}
