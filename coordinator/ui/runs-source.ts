import type { RunSummary } from '../../common/run-index.js';
import type { RunsPage, RunsQuery } from './run-rows.js';

/**
 * Where the server gets the runs' summaries from. The server holds no state of its own: this is
 * the one cache it reads, and it says when something changed ('change', with the new version and
 * the runs that changed). coordinator/ui/run-cache.ts (incremental listings) implements it.
 */
export interface RunsSource {
  /** The summaries, newest first. */
  list(): Promise<RunSummary[]>;
  /** Grows by one at every change. */
  readonly version: number;
  on(event: 'change', listener: (version: number, changedRuns: string[]) => void): unknown;
  off(event: 'change', listener: (version: number, changedRuns: string[]) => void): unknown;
  close(): void;
  /** One page of `/api/runs`, reading only the unfinished runs on it. */
  page(q: RunsQuery): Promise<RunsPage>;
  /** The tag that points to a run, from the repo's tag index (which wins over the run record's own). */
  tagOf(runName: string): Promise<string | undefined>;
  /** Asks for a full listing at the next step: after an action (stop, tag, restart) of the page. */
  refreshSoon(): void;
  /** A run page opened this run: while unfinished it is read each step (while a tab listens), so that its page hears of its changes. */
  watch(runName: string): void;
  /** How many event streams are open: while any is, the unfinished runs of the last page stay read. */
  setWatchers(count: number): void;
}
