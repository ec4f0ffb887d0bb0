import type { RunSummary } from '../../common/run-index.js';
import { runCost } from '../../common/run-cost.js';
import type { AttemptRecord, RunRecord, RunStatus } from '../../common/runs.js';

/** One line of the runs table, as `/api/runs` sends it; null where unknown. */
export interface RunRowJson {
  runName: string;
  workflow: string;
  status: RunStatus;
  attempt: number | null;
  maxAttempts: number;
  owner: string | null;
  submittedAt: string;
  durationMs: number | null;
  instance: string | null;
  costUsd: number | null;
  tag: string | null;
}

/** The filters of `/api/runs`; `page` counts from 1. */
export interface RunsQuery {
  workflow?: string | undefined;
  status?: string | undefined;
  tag?: string | undefined;
  page?: number | undefined;
}

/** The answer of `/api/runs`. */
export interface RunsPage {
  runs: RunRowJson[];
  total: number;
  page: number;
  pageSize: number;
  workflows: string[];
}

/** Rows per page of `/api/runs`. */
export const PAGE_SIZE = 50;

/** An unfinished run as last read: its record (written once), its attempts and the status they give. */
export interface LiveRun {
  record: RunRecord;
  attempts: AttemptRecord[];
  status: RunStatus;
}

/** The row of a run: from the index alone once it has ended, from its records while it has not. */
export function rowOf(s: RunSummary, live: LiveRun | undefined, tag: string | null, nowMs: number): RunRowJson {
  const base = { runName: s.runName, workflow: s.workflow, maxAttempts: s.maxAttempts, submittedAt: s.submittedAt, tag: tag ?? live?.record.tag ?? null };
  if (s.ended || !live) {
    const e = s.ended;
    return { ...base, status: e?.status ?? 'submitted', attempt: e?.attempt ?? null, owner: s.owner ?? null, durationMs: e?.durationMs ?? null, instance: e?.instance ?? null, costUsd: e?.costUsd ?? null };
  }
  const first = live.attempts[0];
  const last = live.attempts.at(-1);
  return {
    ...base,
    status: live.status,
    attempt: live.attempts.length === 0 ? null : live.attempts.length,
    owner: live.record.owner ?? s.owner ?? null,
    durationMs: first ? Math.max(0, nowMs - Date.parse(first.startedAt)) : null,
    // A local agent has no instance, running or finished (the ended key says `-` too).
    instance: last?.instance ? `${last.instance.type} ${last.instance.market}` : null,
    costUsd: runCost(live, nowMs),
  };
}
