import { EventEmitter } from 'node:events';
import { toError } from '../../common/errors.js';
import type { Store } from '../../common/ports.js';
import { listSummaries, type RunSummary } from '../../common/run-index.js';
import { loadRun } from '../../common/runs.js';
import type { RunsPageJson } from './api-runs.js';

/**
 * Where the server gets the runs' summaries from. The server holds no state of its own: this is
 * the one cache it reads, and it says when something changed ('change', with the new version).
 * coordinator/ui/run-cache.ts (incremental listings) is the implementation the command uses once
 * it is there; PollingRunsSource below is the simple one.
 */
export interface RunsSource {
  /** The summaries, newest first. */
  list(): Promise<RunSummary[]>;
  /** Grows by one at every change. */
  readonly version: number;
  on(event: 'change', listener: (version: number, changedRuns?: string[]) => void): unknown;
  off(event: 'change', listener: (version: number, changedRuns?: string[]) => void): unknown;
  close(): void;
  /**
   * One page of `/api/runs`, when the source computes it itself (run-cache.ts does, reading only
   * the unfinished runs it watches); otherwise api-runs.ts builds it from `list()`.
   */
  page?(q: RunsQuery): Promise<RunsPageJson>;
  /** Asks for a full listing at the next refresh: after an action (stop, tag, restart) of the page. */
  refreshSoon?(): void;
}

/** The filters of `/api/runs`; `page` counts from 1. */
export interface RunsQuery {
  workflow?: string | undefined;
  status?: string | undefined;
  tag?: string | undefined;
  page?: number | undefined;
}

/**
 * A RunsSource that lists the whole index every `pollMs` and reads the unfinished runs (few) to see
 * them start: a change of an ended key, a new run or an unfinished run's status bumps the version.
 */
export class PollingRunsSource extends EventEmitter implements RunsSource {
  version = 0;
  private summaries: RunSummary[] | undefined;
  private fingerprints = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private refreshing = false;
  private first: Promise<void> | undefined;

  constructor(
    private readonly store: Store,
    private readonly repoId: string,
    private readonly o: { pollMs: number; onError?: (e: Error) => void },
  ) {
    super();
  }

  async list(): Promise<RunSummary[]> {
    // Tabs that open together share the first listing.
    if (this.summaries === undefined) await (this.first ??= this.refresh().finally(() => (this.first = undefined)));
    this.arm();
    return this.summaries ?? [];
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
  }

  /** The next refresh comes at once (a refresh under way finishes first). */
  refreshSoon(): void {
    if (this.timer && !this.refreshing) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.arm(0);
    }
  }

  /** Re-armed with setTimeout, so that a slow listing never overlaps the next. */
  private arm(delayMs: number = this.o.pollMs): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.refreshing = true;
      this.refresh()
        .catch((e: unknown) => this.o.onError?.(toError(e)))
        .finally(() => {
          this.refreshing = false;
          this.timer = undefined;
          this.arm();
        });
    }, delayMs);
  }

  private async refresh(): Promise<void> {
    const summaries = await listSummaries(this.store, this.repoId);
    const now = Date.now();
    const next = new Map<string, string>();
    await Promise.all(
      summaries.map(async (s) => {
        let status = s.ended?.status ?? 'unfinished';
        if (!s.ended) status = await loadRun(this.store, this.repoId, s.runName, now).then((v) => `${v.status}/${v.attempts.length}`, () => 'unreadable');
        next.set(s.runName, status);
      }),
    );
    const changed = [...next].filter(([run, f]) => this.fingerprints.get(run) !== f).map(([run]) => run);
    const removed = [...this.fingerprints.keys()].filter((run) => !next.has(run));
    this.summaries = summaries;
    this.fingerprints = next;
    if (changed.length + removed.length === 0) return;
    this.version += 1;
    this.emit('change', this.version, [...changed, ...removed]);
  }
}
