import type { DstackConfig } from './config.js';
import type { Store } from './ports.js';
import { runKeys, settleRun, type FinalRecord, type RunRecord, type RunRow } from './runs.js';

/** Written right after the job is sent: a run without it (and without attempts) was never queued. */
export const enqueuedKey = (repoId: string, run: string): string => `${runKeys.prefix(repoId, run)}enqueued.json`;

/**
 * How long a run may stay recorded but unsent before it counts as an orphan: two leases. The
 * submitter sends right after recording the run, so only a dead CLI takes that long.
 */
export function orphanGraceMs(config: DstackConfig): number {
  return 2 * config.local.visibilityTimeoutSec * 1000;
}

/**
 * Whether a run, past the grace and with no attempt, was never queued, unless its `enqueued.json`
 * exists (which the caller checks): only runs whose submitter marks the send can be told apart.
 */
export function pastOrphanGrace(record: RunRecord, attempts: number, graceMs: number, nowMs: number): boolean {
  return record.marksEnqueued === true && attempts === 0 && nowMs - Date.parse(record.submittedAt) >= graceMs;
}

/**
 * Settles the runs whose submitter died between recording them and sending their job (killed
 * mid-submit): no final status, no attempt, no `enqueued.json`, older than the grace. No agent will
 * ever see them, so without this they would stay Submitted forever. Returns the rows as they now stand.
 */
export async function settleOrphans(store: Store, repoId: string, rows: RunRow[], graceMs: number, nowMs: number): Promise<RunRow[]> {
  return Promise.all(
    rows.map(async (row) => {
      const v = row.view;
      if (!v || v.final || !pastOrphanGrace(v.record, v.attempts.length, graceMs, nowMs)) return row;
      const { runName } = v.record;
      if (await store.head(enqueuedKey(repoId, runName))) return row;
      const final = await settleOrphan(store, repoId, runName, nowMs);
      return { ...row, status: final.status, view: { ...v, final, status: final.status } };
    }),
  );
}

/** Settles a run that was recorded but never queued as failed, saying how to run it again. */
export function settleOrphan(store: Store, repoId: string, runName: string, nowMs: number): Promise<FinalRecord> {
  return settleRun(store, repoId, runName, {
    status: 'failed',
    exitCode: null,
    reason: `never queued: the dstack that submitted it stopped before sending the job; run it again with \`dstack restart ${runName}\``,
    finishedAt: new Date(nowMs).toISOString(),
    attempt: null,
  });
}
