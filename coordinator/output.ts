import { TransferProgress } from '../common/progress.js';

/** The CLI's only way to print: for people on stdout/stderr, or JSON for scripts. */
export interface Output {
  /** A line for people on stdout. */
  line(text?: string): void;
  /**
   * Raw job output, passed through byte for byte as the job wrote it. Returns a promise when the
   * stream's buffer is full: callers that print a lot wait for it, so a slow reader bounds memory.
   */
  raw(stream: 'out' | 'err', data: Buffer | string): void | Promise<void>;
  /** A line about a problem or a hint, on stderr. */
  note(text: string): void;
  json(value: unknown): void;
  table(header: string[], rows: string[][]): void;
  /**
   * A transfer's progress on stderr when it is a terminal (one line redrawn in place, from 2 s on: bytes,
   * rate, time left; see common/progress.ts); silent otherwise. `total` 0 means unknown.
   */
  progress(label: string, total: number): Progress;
  readonly isTTY: boolean;
}

export interface Progress {
  update(done: number): void;
  done(): void;
}

export function consoleOutput(stdout: NodeJS.WriteStream, stderr: NodeJS.WriteStream): Output {
  return {
    isTTY: stdout.isTTY,
    line: (text = '') => void stdout.write(`${text}\n`),
    raw: (stream, data) => {
      const target = stream === 'out' ? stdout : stderr;
      if (!target.write(data)) return new Promise<void>((resolve) => target.once('drain', () => resolve()));
    },
    note: (text) => void stderr.write(`${text}\n`),
    json: (value) => void stdout.write(`${JSON.stringify(value, null, 2)}\n`),
    table: (header, rows) => void stdout.write(formatTable(header, rows)),
    progress: (label, total) => {
      if (!stderr.isTTY) return { update: () => undefined, done: () => undefined };
      const meter = new TransferProgress({ label, totalBytes: total, mode: 'terminal', columns: stderr.columns, write: (s) => void stderr.write(s) });
      return { update: (done) => meter.update(done), done: () => meter.end() };
    },
  };
}

/** 1536 -> "1.5 KB": the one size format, shared with the transfer progress lines. */
export { formatSize as formatBytes } from '../common/progress.js';

/** Left-aligned columns two spaces apart, header first. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [fmt(header), ...rows.map(fmt)].join('\n') + '\n';
}

/** "3 minutes ago"-style age of an ISO time. */
export function ago(iso: string, nowMs: number): string {
  const s = Math.max(0, Math.round((nowMs - Date.parse(iso)) / 1000));
  if (s < 5) return 'now';
  if (s < 60) return `${s} secs ago`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min${m === 1 ? '' : 's'} ago`;
  const h = Math.round(m / 60);
  if (h < 48) return `${h} hour${h === 1 ? '' : 's'} ago`;
  return `${Math.round(h / 24)} days ago`;
}
