import { z } from 'zod';
import type { ObjectInfo, Store } from './ports.js';
import { CorruptRecordError, readRecord } from './records/read.js';

/** Where the collector keeps the blobs and manifests it found unreferenced, and since when. */
export const CANDIDATES_KEY = 'gc/candidates.json';

const CandidatesSchema = z.object({
  version: z.literal(1),
  sweptAt: z.string(),
  /** Store key → when a sweep first found it unreferenced and older than the grace (ms since the epoch). */
  sinceMs: z.record(z.string(), z.number()),
});

/** A blob or manifest no run references, with when it first was seen so and when it may go. */
export interface GcCandidate {
  kind: 'manifest' | 'blob';
  what: string;
  sizeBytes: number;
  /** When a sweep first found it unreferenced and older than the grace (ms since the epoch). */
  sinceMs: number;
  /** The first sweep at or after this time that still finds it unreferenced and unmodified removes it. */
  goesAtMs: number;
}

/** The candidates the previous sweeps recorded; none (and a note) if the record is damaged. */
export async function readCandidates(store: Store, notes: string[]): Promise<Map<string, number>> {
  try {
    return new Map(Object.entries((await readRecord(store, CANDIDATES_KEY, CandidatesSchema))?.sinceMs ?? {}));
  } catch (e) {
    if (!(e instanceof CorruptRecordError)) throw e;
    notes.push(`${e.message}: every unreferenced blob starts its grace again`);
    return new Map();
  }
}

/**
 * Splits what this sweep found unreferenced and older than the grace into what goes now (a
 * candidate since at least the grace) and what stays a candidate, keeping each one's first sighting.
 * Anything not found unreferenced this time drops out of the record, so its wait starts again.
 */
export function splitCandidates(
  kind: GcCandidate['kind'],
  found: ObjectInfo[],
  previous: Map<string, number>,
  nowMs: number,
  graceMs: number,
): { due: GcCandidate[]; waiting: GcCandidate[] } {
  const due: GcCandidate[] = [];
  const waiting: GcCandidate[] = [];
  for (const x of found) {
    const sinceMs = previous.get(x.key) ?? nowMs;
    const c: GcCandidate = { kind, what: x.key, sizeBytes: x.sizeBytes, sinceMs, goesAtMs: sinceMs + graceMs };
    (nowMs >= c.goesAtMs ? due : waiting).push(c);
  }
  return { due, waiting };
}

/** Records the candidates that wait for a later sweep (the record replaces the previous one). */
export async function writeCandidates(store: Store, waiting: GcCandidate[], nowMs: number): Promise<void> {
  const record: z.infer<typeof CandidatesSchema> = {
    version: 1,
    sweptAt: new Date(nowMs).toISOString(),
    sinceMs: Object.fromEntries(waiting.map((c) => [c.what, c.sinceMs])),
  };
  await store.put(CANDIDATES_KEY, JSON.stringify(record));
}
