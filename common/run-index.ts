import type { Store } from './ports.js';
import type { FinalRecord, FinalStatus, RunRecord } from './runs.js';

/**
 * The run index: what `ps` shows about a run is encoded in the keys of two empty objects, as dstack
 * 0.0.14 did, so a listing (1,000 keys a page on S3) is enough and no run's objects are read.
 *
 *   repos/<repo>/index/submitted/<submittedAt>,<run>,<workflow>,<maxAttempts>[,<owner>]
 *   repos/<repo>/index/ended/<run>,<status>,<attempt>,<exitCode>,<reason>
 *
 * Values are URI-encoded, so `,` never occurs inside one. The submitted key is written right after
 * the run name is reserved; the ended key right after the final status is created. Only a run with
 * no ended key is read in full, and a reader that finds it finished writes the missing key.
 * The owner field (absent in keys written before owners existed) is for display: it may be cut
 * short, so decisions about who may stop or remove a run read the run record.
 */
export const indexKeys = {
  submitted: (repoId: string): string => `repos/${repoId}/index/submitted/`,
  ended: (repoId: string): string => `repos/${repoId}/index/ended/`,
};

/** What the index tells about one run. */
export interface RunSummary {
  runName: string;
  workflow: string;
  submittedAt: string;
  maxAttempts: number;
  /** Who submitted it, as the index has it (cut short past 90 encoded characters); undefined in older keys. */
  owner?: string;
  /** Set once the run has ended. */
  ended: { status: FinalStatus; attempt: number | null; exitCode: number | null; reason: string } | null;
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

export function endedKey(repoId: string, runName: string, final: FinalRecord): string {
  const fields = [runName, final.status, final.attempt === null ? '-' : String(final.attempt), final.exitCode === null ? '-' : String(final.exitCode), encode(final.reason ?? '', 120)];
  return `${indexKeys.ended(repoId)}${fields.join(',')}`;
}

/** All runs of a repo from the index alone, newest first: two paginated listings, no reads. */
export async function listSummaries(store: Store, repoId: string): Promise<RunSummary[]> {
  const [submitted, ended] = await Promise.all([store.list(indexKeys.submitted(repoId)), store.list(indexKeys.ended(repoId))]);
  const endedByRun = new Map<string, RunSummary['ended']>();
  for (const o of ended) {
    const [run, status, attempt, exitCode, reason] = o.key.slice(indexKeys.ended(repoId).length).split(',');
    if (!run || (status !== 'done' && status !== 'failed' && status !== 'stopped')) continue;
    endedByRun.set(run, {
      status,
      attempt: attempt === '-' || attempt === undefined ? null : Number(attempt),
      exitCode: exitCode === '-' || exitCode === undefined ? null : Number(exitCode),
      reason: decode(reason ?? ''),
    });
  }
  const out: RunSummary[] = [];
  for (const o of submitted) {
    const [submittedAt, runName, workflow, maxAttempts, owner] = o.key.slice(indexKeys.submitted(repoId).length).split(',');
    if (!submittedAt || !runName) continue;
    out.push({
      runName,
      submittedAt,
      workflow: decode(workflow ?? ''),
      maxAttempts: Number(maxAttempts ?? 0),
      ...(owner ? { owner: decode(owner) } : {}),
      ended: endedByRun.get(runName) ?? null,
    });
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
