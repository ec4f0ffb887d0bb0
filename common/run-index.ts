import type { Store } from './ports.js';
import { NO_FACTS, type EndedFacts } from './run-cost.js';
import type { FinalRecord, FinalStatus, RunRecord } from './runs.js';

/**
 * The run index: what `ps` shows about a run is encoded in the keys of two empty objects, as dstack
 * 0.0.14 did, so a listing (1,000 keys a page on S3) is enough and no run's objects are read.
 *
 *   repos/<repo>/index/submitted/<submittedAt>,<run>,<workflow>,<maxAttempts>[,<owner>]
 *   repos/<repo>/index/ended/<run>,<status>,<attempt>,<exitCode>,<reason>[,<finishedAt>,<durationMs>,<costUsd>,<instance>]
 *
 * Values are URI-encoded, so `,` never occurs inside one. The submitted key is written right after
 * the run name is reserved; the ended key right after the final status is created. Only a run with
 * no ended key is read in full, and a reader that finds it finished writes the missing key.
 * The owner field (absent in keys written before owners existed) is for display: it may be cut
 * short, so decisions about who may stop or remove a run read the run record. The four fields after
 * the reason (absent in older keys; `-` when unknown) let the dashboard show duration, instance and
 * cost, and chart spend per day, without reading finished runs. The key's last segment is a file
 * name in the local store: it is kept under 255 bytes by cutting the reason shorter when needed.
 */
export const indexKeys = {
  submitted: (repoId: string): string => `repos/${repoId}/index/submitted/`,
  ended: (repoId: string): string => `repos/${repoId}/index/ended/`,
};

/** What the index tells about an ended run. The fields after `reason` are absent in keys written before they existed. */
export interface EndedSummary {
  status: FinalStatus;
  attempt: number | null;
  exitCode: number | null;
  reason: string;
  /** ISO time of the final status. */
  finishedAt?: string;
  /** See EndedFacts: null when unknown. */
  durationMs?: number | null;
  costUsd?: number | null;
  /** `type market` of the last attempt's instance; null off EC2. */
  instance?: string | null;
}

/** What the index tells about one run. */
export interface RunSummary {
  runName: string;
  workflow: string;
  submittedAt: string;
  maxAttempts: number;
  /** Who submitted it, as the index has it (cut short past 90 encoded characters); undefined in older keys. */
  owner?: string;
  /** Set once the run has ended. */
  ended: EndedSummary | null;
}

/** URI-encodes a value, cut (by whole characters) short enough for a file name in the local store. */
function encode(value: string, maxChars: number): string {
  const chars = Array.from(value);
  let encoded = encodeURIComponent(value);
  while (encoded.length > maxChars) {
    chars.length = Math.max(0, chars.length - Math.ceil((encoded.length - maxChars) / 9));
    encoded = encodeURIComponent(chars.join(''));
  }
  return encoded;
}

/** An owner as the index holds it (cut short past 90 encoded characters): compare owners from the index and from records in this form. */
export function indexedOwner(owner: string): string {
  return decode(encode(owner, 90));
}

type Submitted = Pick<RunRecord, 'submittedAt' | 'runName' | 'workflow' | 'maxAttempts' | 'owner'>;

export function submittedKey(repoId: string, run: Submitted): string {
  const fields = [run.submittedAt, run.runName, encode(run.workflow, 100), String(run.maxAttempts)];
  // A run without an owner keeps the four-field key of older versions, so it is found again by `rm` and gc.
  if (run.owner !== undefined) fields.push(encode(run.owner, 90));
  return `${indexKeys.submitted(repoId)}${fields.join(',')}`;
}

/** Bytes of the ended key's last segment, below the 255 of a file name with room to spare. */
export const ENDED_SEGMENT_MAX = 250;

/** The ended index key of a run; `facts` (from endedFacts) default to unknown. */
export function endedKey(repoId: string, runName: string, final: FinalRecord, facts: EndedFacts = NO_FACTS): string {
  const num = (n: number | null): string => (n === null || !Number.isFinite(n) ? '-' : String(n));
  const head = [runName, final.status, num(final.attempt), num(final.exitCode)];
  const tail = [
    encode(final.finishedAt, 40),
    num(facts.durationMs === null ? null : Math.round(facts.durationMs)),
    // Micro-dollars are enough for a chart, and keep the field short.
    num(facts.costUsd === null ? null : Number(facts.costUsd.toFixed(6))),
    facts.instance === null ? '-' : encode(facts.instance, 40),
  ];
  // Whatever the other fields take, the reason gets the rest (at most 120 encoded characters).
  const fixed = [...head, ...tail].join(',').length + 1;
  const reason = encode(final.reason ?? '', Math.max(0, Math.min(120, ENDED_SEGMENT_MAX - fixed)));
  return `${indexKeys.ended(repoId)}${[...head, reason, ...tail].join(',')}`;
}

/** Parses the part of an ended key after `index/ended/`; undefined if it is not one. */
export function parseEndedKey(segment: string): { runName: string; ended: EndedSummary } | undefined {
  const [run, status, attempt, exitCode, reason, finishedAt, durationMs, costUsd, instance] = segment.split(',');
  if (!run || (status !== 'done' && status !== 'failed' && status !== 'stopped')) return undefined;
  const num = (f: string | undefined): number | null => (f === '-' || f === undefined || f === '' || !Number.isFinite(Number(f)) ? null : Number(f));
  const ended: EndedSummary = { status, attempt: num(attempt), exitCode: num(exitCode), reason: decode(reason ?? '') };
  if (finishedAt !== undefined) {
    ended.finishedAt = decode(finishedAt);
    ended.durationMs = num(durationMs);
    ended.costUsd = num(costUsd);
    ended.instance = instance === undefined || instance === '-' ? null : decode(instance);
  }
  return { runName: run, ended };
}

/** Parses the part of a submitted key after `index/submitted/`; undefined if it is not one. */
export function parseSubmittedKey(segment: string): Omit<RunSummary, 'ended'> | undefined {
  const [submittedAt, runName, workflow, maxAttempts, owner] = segment.split(',');
  if (!submittedAt || !runName) return undefined;
  return { runName, submittedAt, workflow: decode(workflow ?? ''), maxAttempts: Number(maxAttempts ?? 0), ...(owner ? { owner: decode(owner) } : {}) };
}

/** All runs of a repo from the index alone, newest first: two paginated listings, no reads. */
export async function listSummaries(store: Store, repoId: string): Promise<RunSummary[]> {
  const [submitted, ended] = await Promise.all([store.list(indexKeys.submitted(repoId)), store.list(indexKeys.ended(repoId))]);
  const endedByRun = new Map<string, RunSummary['ended']>();
  for (const o of ended) {
    const parsed = parseEndedKey(o.key.slice(indexKeys.ended(repoId).length));
    if (parsed) endedByRun.set(parsed.runName, parsed.ended);
  }
  const out: RunSummary[] = [];
  for (const o of submitted) {
    const parsed = parseSubmittedKey(o.key.slice(indexKeys.submitted(repoId).length));
    if (parsed) out.push({ ...parsed, ended: endedByRun.get(parsed.runName) ?? null });
  }
  return out.reverse();
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** The index keys of one run, for `rm`. */
export async function indexKeysOf(store: Store, repoId: string, run: Submitted): Promise<string[]> {
  const ended = await store.list(`${indexKeys.ended(repoId)}${run.runName},`);
  return [submittedKey(repoId, run), ...ended.map((o) => o.key)];
}

/** The owner the index names for one run (cut short, see indexedOwner), found by its name alone: for a run whose record is damaged. */
export async function indexedOwnerByName(store: Store, repoId: string, runName: string): Promise<string | undefined> {
  for (const o of await store.list(indexKeys.submitted(repoId))) {
    const fields = o.key.slice(indexKeys.submitted(repoId).length).split(',');
    if (fields[1] === runName && fields[4]) return decode(fields[4]);
  }
  return undefined;
}

/** The index keys of one run found by its name alone, for removing a run whose record is damaged. */
export async function indexKeysByName(store: Store, repoId: string, runName: string): Promise<string[]> {
  const [submitted, ended] = await Promise.all([store.list(indexKeys.submitted(repoId)), store.list(`${indexKeys.ended(repoId)}${runName},`)]);
  const mine = submitted.filter((o) => o.key.slice(indexKeys.submitted(repoId).length).split(',')[1] === runName);
  return [...mine, ...ended].map((o) => o.key);
}
