import { readRecord } from './records/read.js';
import { AttemptRecordSchema, RunRecordSchema, type AttemptRecord, type FinalRecord, type RunRecord } from './records/runs.js';
import type { Store } from './ports.js';

/** What a run cost and took, as the ended index key holds it (so that listings need not read the run). */
export interface EndedFacts {
  /** From the first attempt's start to the final status, in ms; null when no attempt started. */
  durationMs: number | null;
  /** USD over the attempts that ran on priced instances; null when none had a known price (local runs). */
  costUsd: number | null;
  /** The last attempt's instance as `type market` (`g5.xlarge spot`); null off EC2. */
  instance: string | null;
}

/** A run's record and attempts: what cost and duration are computed from. */
export interface CostedRun {
  record: Pick<RunRecord, 'placement'>;
  attempts: AttemptRecord[];
}

/** Facts of a run that never started an attempt (a cache hit, a run stopped or failed before it ran). */
export const NO_FACTS: EndedFacts = { durationMs: null, costUsd: null, instance: null };

/**
 * Price × time over the attempts that ran on priced instances, up to `nowMs` for one still
 * running (bounded by its lease); null when none has a known price.
 */
export function runCost(run: CostedRun, nowMs: number): number | null {
  let total: number | null = null;
  for (const a of run.attempts) {
    const offer = run.record.placement?.offers.find((o) => o.instanceType === a.instance?.type && o.market === a.instance?.market);
    if (!a.instance || !offer) continue;
    const end = a.endedAt ? Date.parse(a.endedAt) : a.state === 'running' ? Math.min(nowMs, Date.parse(a.heartbeatAt) + a.leaseMs) : Date.parse(a.heartbeatAt);
    total = (total ?? 0) + (offer.pricePerHour * Math.max(0, end - Date.parse(a.startedAt))) / 3_600_000;
  }
  return total;
}

/** The facts the ended index key carries, for a run that ended with `final`. */
export function endedFacts(run: CostedRun, final: Pick<FinalRecord, 'finishedAt'>): EndedFacts {
  const first = run.attempts[0];
  const last = run.attempts[run.attempts.length - 1];
  const finishedMs = Date.parse(final.finishedAt);
  return {
    durationMs: first ? Math.max(0, finishedMs - Date.parse(first.startedAt)) : null,
    costUsd: runCost(run, finishedMs),
    instance: last?.instance ? `${last.instance.type} ${last.instance.market}` : null,
  };
}

/**
 * Reads what `endedFacts` needs (the run record and its attempts), for a settler that does not hold
 * them (the agent). `current`, the settler's own attempt, replaces the stored copy, which may not
 * say yet that it ended. Best effort: the index key is for display, so a failed read gives NO_FACTS.
 */
export async function readEndedFacts(store: Store, keys: { record: string; attempts: string }, final: FinalRecord, current?: AttemptRecord): Promise<EndedFacts> {
  try {
    const [record, listed] = await Promise.all([readRecord(store, keys.record, RunRecordSchema), store.list(keys.attempts)]);
    const attempts = (await Promise.all(listed.map((o) => readRecord(store, o.key, AttemptRecordSchema)))).filter((a): a is AttemptRecord => a !== null);
    const merged = current ? [...attempts.filter((a) => a.attempt !== current.attempt), current].sort((a, b) => a.attempt - b.attempt) : attempts;
    return record ? endedFacts({ record, attempts: merged }, final) : NO_FACTS;
  } catch {
    return NO_FACTS;
  }
}
