import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Progress of a transfer (an artifact saved, restored or downloaded): bytes done of the total, the
 * rate so far and the time left. Nothing is shown for a transfer that ends within QUIET_MS. On a
 * terminal it is one line redrawn in place; in a job's log, a line every 10% or every 10 s, whichever
 * is rarer, so that a long transfer says where it is without flooding the log.
 */

/** A transfer that ends within this time shows no progress at all. */
export const QUIET_MS = 2000;
/** The shortest time between two redraws of the terminal line. */
export const REDRAW_MS = 200;
/** In a job's log: at least this long, and at least LOG_STEP of the total, between two lines. */
export const LOG_EVERY_MS = 10_000;
export const LOG_STEP = 0.1;

/** 1536 -> "1.5 KB" (the CLI's units, for a line a person reads). */
export function formatSize(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i] ?? ''}`;
}

/** 75_000 -> "1 min 15 s"; whole seconds, rounded up (a transfer never has "0 s left" while running). */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.ceil(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/**
 * "412.0 MB of 1.0 GB (40%), 95.3 MB/s, 7 s left". The rate is the average since the start; with an
 * unknown total (0) only the bytes and the rate.
 */
export function describeTransfer(doneBytes: number, totalBytes: number, elapsedMs: number): string {
  const rate = elapsedMs > 0 ? (doneBytes * 1000) / elapsedMs : 0;
  const speed = `${formatSize(Math.round(rate))}/s`;
  if (totalBytes <= 0) return `${formatSize(doneBytes)}, ${speed}`;
  const pct = Math.min(100, Math.floor((doneBytes / totalBytes) * 100));
  const left = rate > 0 ? formatDuration(((totalBytes - doneBytes) * 1000) / rate) : '?';
  return `${formatSize(doneBytes)} of ${formatSize(totalBytes)} (${pct}%), ${speed}, ${left} left`;
}

export interface TransferProgressOptions {
  /** What moves, e.g. `downloading data` or `restoring data from workflow prep`. */
  label: string;
  /** 0 when unknown: then no percentage or time left, and a log line every LOG_EVERY_MS. */
  totalBytes: number;
  /** `terminal`: one line redrawn with \r and cleared at the end; `log`: whole lines. */
  mode: 'terminal' | 'log';
  write: (text: string) => void;
  /** A terminal's width: the line is cut to fit, since a line that wraps cannot be redrawn with \r. */
  columns?: number;
  /** ms; Date.now unless a test passes its clock. */
  now?: () => number;
}

/** Feeds on the running byte count of one transfer and writes its progress as TransferProgressOptions says. */
export class TransferProgress {
  private readonly now: () => number;
  private readonly startMs: number;
  private lastMs = -Infinity;
  private lastBytes = 0;
  private drawn = false;
  private doneBytes = 0;
  private totalBytes: number;

  constructor(private readonly o: TransferProgressOptions) {
    this.now = o.now ?? Date.now;
    this.startMs = this.now();
    this.totalBytes = o.totalBytes;
  }

  /** `totalBytes`, when the transfer itself learns it (a restore, from its manifest), replaces the one given at the start. */
  update(doneBytes: number, totalBytes?: number): void {
    if (totalBytes !== undefined) this.totalBytes = totalBytes;
    this.doneBytes = doneBytes;
    const t = this.now();
    const elapsed = t - this.startMs;
    if (elapsed < QUIET_MS) return;
    const text = `${this.o.label}: ${describeTransfer(doneBytes, this.totalBytes, elapsed)}`;
    if (this.o.mode === 'terminal') {
      if (t - this.lastMs < REDRAW_MS) return;
      const cols = this.o.columns ?? 0;
      this.o.write(`\r${cols > 1 && text.length >= cols ? `${text.slice(0, cols - 2)}…` : text}\x1b[K`);
    } else {
      // The first line once the transfer has lasted LOG_EVERY_MS (so a short one says nothing), then
      // a line only when both LOG_EVERY_MS and LOG_STEP of the total have passed since the last.
      const sinceMs = this.drawn ? t - this.lastMs : elapsed;
      const step = this.totalBytes > 0 ? (doneBytes - this.lastBytes) / this.totalBytes : 1;
      if (sinceMs < LOG_EVERY_MS || step < LOG_STEP) return;
      this.o.write(`dstack: ${text}\n`);
    }
    this.lastMs = t;
    this.lastBytes = doneBytes;
    this.drawn = true;
  }

  /**
   * Clears the terminal line, if one was drawn. In a log, a transfer that lasted over QUIET_MS ends
   * with a line of what it moved, in how long and how fast.
   */
  end(): void {
    const elapsed = this.now() - this.startMs;
    if (this.o.mode === 'terminal' && this.drawn) this.o.write('\r\x1b[K');
    if (this.o.mode === 'log' && elapsed >= QUIET_MS) {
      const rate = formatSize(Math.round((this.doneBytes * 1000) / elapsed));
      this.o.write(`dstack: ${this.o.label}: ${formatSize(this.doneBytes)} in ${formatDuration(elapsed)}, ${rate}/s\n`);
    }
    this.drawn = false;
  }
}

/**
 * The bytes a save of `root` will read: its regular files' sizes, links not followed (as saveTree
 * walks it). For the total of a save's progress; 0 if `root` is gone.
 */
export async function treeSizeBytes(root: string): Promise<number> {
  const st = await lstat(root).catch(() => undefined);
  if (!st) return 0;
  if (st.isFile()) return st.size;
  if (!st.isDirectory()) return 0;
  let total = 0;
  for (const d of await readdir(root, { withFileTypes: true }).catch(() => [])) {
    if (d.isDirectory()) total += await treeSizeBytes(join(root, d.name));
    else if (d.isFile()) total += (await lstat(join(root, d.name)).catch(() => undefined))?.size ?? 0;
  }
  return total;
}
