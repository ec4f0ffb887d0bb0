import { ConflictError, NotFoundError } from './errors.js';
import { nameStem } from './names.js';
import { endedKey, listSummaries, submittedKey, type RunSummary } from './run-index.js';
import { endedFacts, NO_FACTS, type EndedFacts } from './run-cost.js';
import type { Store } from './ports.js';
import type { ArtifactIndex, AttemptRecord, FinalRecord, FinalStatus, RunRecord, StopRequest } from './records/runs.js';
import { ArtifactIndexSchema, AttemptRecordSchema, FinalRecordSchema, RunRecordSchema, StopRequestSchema } from './records/runs.js';
import { CorruptRecordError, readRecord } from './records/read.js';

export type { ArtifactIndex, AttemptRecord, FinalRecord, FinalStatus, HostFacts, InstanceFacts, RunRecord, SavedArtifactRef, ServiceInfo, StopRequest, TagRecord } from './records/runs.js';
export type RunStatus = 'submitted' | 'running' | 'stopping' | FinalStatus;

/** A run as the CLI shows it: the record, its last attempt, its final status and the derived status. */
export interface RunView {
  record: RunRecord;
  attempts: AttemptRecord[];
  final: FinalRecord | null;
  stop: StopRequest | null;
  artifacts: ArtifactIndex | null;
  status: RunStatus;
}

/** Where a run's objects live in the store. */
export const runKeys = {
  runsPrefix: (repoId: string): string => `repos/${repoId}/runs/`,
  prefix: (repoId: string, run: string): string => `repos/${repoId}/runs/${run}/`,
  record: (repoId: string, run: string): string => `repos/${repoId}/runs/${run}/run.json`,
  final: (repoId: string, run: string): string => `repos/${repoId}/runs/${run}/final.json`,
  stop: (repoId: string, run: string): string => `repos/${repoId}/runs/${run}/stop.json`,
  attempt: (repoId: string, run: string, n: number): string => `repos/${repoId}/runs/${run}/attempts/${String(n).padStart(4, '0')}.json`,
  attempts: (repoId: string, run: string): string => `repos/${repoId}/runs/${run}/attempts/`,
  logs: (repoId: string, run: string): string => `repos/${repoId}/runs/${run}/logs/`,
  artifacts: (repoId: string, run: string): string => `repos/${repoId}/runs/${run}/artifacts.json`,
  tag: (repoId: string, tag: string): string => `repos/${repoId}/tags/${tag}.json`,
  tags: (repoId: string): string => `repos/${repoId}/tags/`,
  cache: (repoId: string, key: string): string => `repos/${repoId}/cache/${key}.json`,
  logChunk: (repoId: string, run: string, attempt: number, seq: number): string =>
    `repos/${repoId}/runs/${run}/logs/${String(attempt).padStart(4, '0')}-${String(seq).padStart(8, '0')}.log`,
};

/**
 * Reads a stored record and parses it with its schema (see common/records/): null if it does not
 * exist, CorruptRecordError naming the key if it is not what the schema says.
 */
export const readJson = readRecord;

/**
 * Reserves a fresh `adjective-animal-N` name by creating the run record exclusively; concurrent
 * submitters never get the same name.
 */
export async function createRun(store: Store, build: (runName: string) => RunRecord, random: () => number = Math.random): Promise<RunRecord> {
  for (let tries = 0; tries < 50; tries++) {
    const stem = nameStem(random);
    for (let n = 1; n <= 3; n++) {
      const record = build(`${stem}-${n}`);
      try {
        await store.put(runKeys.record(record.repoId, record.runName), JSON.stringify(record, null, 2), { ifAbsent: true });
        await store.put(submittedKey(record.repoId, record), '');
        return record;
      } catch (e) {
        if (!(e instanceof ConflictError)) throw e;
      }
    }
  }
  throw new ConflictError('could not find a free run name after 150 tries');
}

/**
 * Creates the final status unless one exists; returns the final status that stands. `facts` (see
 * endedFacts) go into the index key; a run that never started an attempt has none.
 */
export async function settleRun(store: Store, repoId: string, run: string, final: FinalRecord, facts: EndedFacts = NO_FACTS): Promise<FinalRecord> {
  try {
    await store.put(runKeys.final(repoId, run), JSON.stringify(final, null, 2), { ifAbsent: true });
    await store.put(endedKey(repoId, run, final, facts), '');
    return final;
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
    return (await readJson(store, runKeys.final(repoId, run), FinalRecordSchema)) ?? final;
  }
}

/** Reads everything about one run; NotFoundError if there is no such run, CorruptRecordError naming a damaged record. */
export async function loadRun(store: Store, repoId: string, run: string, nowMs: number = Date.now()): Promise<RunView> {
  try {
    return await readRun(store, repoId, run, nowMs);
  } catch (e) {
    if (!(e instanceof CorruptRecordError)) throw e;
    throw new CorruptRecordError(e.key, e.detail, { cause: e, hint: `\`dstack rm ${run}\` removes the run` });
  }
}

async function readRun(store: Store, repoId: string, run: string, nowMs: number): Promise<RunView> {
  const [record, final, stop, artifacts, attemptObjs] = await Promise.all([
    readJson(store, runKeys.record(repoId, run), RunRecordSchema),
    readJson(store, runKeys.final(repoId, run), FinalRecordSchema),
    readJson(store, runKeys.stop(repoId, run), StopRequestSchema),
    readJson(store, runKeys.artifacts(repoId, run), ArtifactIndexSchema),
    store.list(runKeys.attempts(repoId, run)),
  ]);
  if (!record) throw new NotFoundError(`run \`${run}\` does not exist: see \`dstack ps -a\``);
  const attempts = (await Promise.all(attemptObjs.map((o) => readJson(store, o.key, AttemptRecordSchema)))).filter(
    (a): a is AttemptRecord => a !== null,
  );
  return { record, attempts, final, stop, artifacts, status: deriveStatus(final, attempts, stop, nowMs) };
}

export function deriveStatus(final: FinalRecord | null, attempts: AttemptRecord[], stop: StopRequest | null, nowMs: number): RunStatus {
  if (final) return final.status;
  const last = attempts[attempts.length - 1];
  const live = last !== undefined && last.state === 'running' && nowMs - Date.parse(last.heartbeatAt) < last.leaseMs;
  if (stop) return 'stopping';
  return live ? 'running' : 'submitted';
}

/** A run as listings show it: the index summary, plus the whole run for those still unfinished. */
export interface RunRow {
  summary: RunSummary;
  status: RunStatus;
  /** Read only for unfinished runs. */
  view: RunView | null;
}

/**
 * Whether an attempt of the run may still be running, read without trusting the run's other
 * records (for removing a damaged run): false once a final status exists, even a damaged one.
 */
export async function mayBeRunning(store: Store, repoId: string, run: string, nowMs: number = Date.now()): Promise<boolean> {
  if (await store.head(runKeys.final(repoId, run))) return false;
  const attempts = await store.list(runKeys.attempts(repoId, run));
  const records = await Promise.all(
    attempts.map((o) =>
      readJson(store, o.key, AttemptRecordSchema).catch((e: unknown) => {
        if (e instanceof CorruptRecordError) return null;
        throw e;
      }),
    ),
  );
  return records.some((a) => a !== null && a.state === 'running' && nowMs - Date.parse(a.heartbeatAt) < a.leaseMs);
}

/**
 * The runs of a repo, newest first, from the run index: finished runs cost nothing beyond the
 * listing; unfinished ones (few) are read in full. An unfinished run with a damaged record is left
 * out and given to `onCorrupt`, so that one bad run stops neither `ps` nor `stop -a` nor deps.
 */
export async function listRuns(store: Store, repoId: string, o: { nowMs?: number; onCorrupt?: (e: CorruptRecordError) => void } = {}): Promise<RunRow[]> {
  const nowMs = o.nowMs ?? Date.now();
  const summaries = await listSummaries(store, repoId);
  const rows = await Promise.all(
    summaries.map(async (summary): Promise<RunRow | null> => {
      if (summary.ended) return { summary, status: summary.ended.status, view: null };
      const view = await loadRun(store, repoId, summary.runName, nowMs).catch((e: unknown) => {
        if (e instanceof NotFoundError) return null;
        // A damaged run is left out of the listing (and told to `onCorrupt`): it must not hide the others.
        if (e instanceof CorruptRecordError) {
          o.onCorrupt?.(e);
          return null;
        }
        throw e;
      });
      if (!view) return null;
      // The settler stopped between the final status and its index key: finish its work.
      if (view.final && !summary.ended) await store.put(endedKey(repoId, summary.runName, view.final, endedFacts(view, view.final)), '');
      return { summary, status: view.status, view };
    }),
  );
  return rows.filter((r): r is RunRow => r !== null);
}

export function isFinished(status: RunStatus): status is FinalStatus {
  return status === 'done' || status === 'failed' || status === 'stopped';
}
