import { ConflictError, NotFoundError } from './errors.js';
import { nameStem } from './names.js';
import { endedKey, listSummaries, submittedKey, type RunSummary } from './run-index.js';
import type { Placement, Store } from './ports.js';
import type { JobSpec } from './spec/job-spec.js';

export type FinalStatus = 'done' | 'failed' | 'stopped';
export type RunStatus = 'submitted' | 'running' | 'stopping' | FinalStatus;

/** Written once when the run is submitted; its exclusive creation reserves the run name. */
export interface RunRecord {
  runName: string;
  repoId: string;
  workflow: string;
  jobId: string;
  submittedAt: string;
  maxAttempts: number;
  /** The resolved spec: code snapshot, pinned deps and overrides included. */
  spec: JobSpec;
  /** Per-run overrides given on the command line, as given. */
  overrides: string[];
  toolVersion: string;
  /** Set by `dstack restart`: the run this one reproduces. */
  restartOf?: string;
  /** Tag given with `run -t`. */
  tag?: string;
  /** The profile (queue) it was sent to and the machine offers, cheapest first, for cost. */
  placement?: Placement;
  /**
   * Set by submitters that write `enqueued.json` once the job is sent: such a run with neither that
   * marker nor an attempt, past a grace, was never queued (its CLI died) and is settled as failed.
   */
  marksEnqueued?: boolean;
}

/** The saved artifacts of a run; written after every save, the last one when the job ends. */
export interface ArtifactIndex {
  artifacts: SavedArtifactRef[];
  savedAt: string;
  /** False while a `mount: true` artifact is still being saved incrementally. */
  complete: boolean;
}

export interface SavedArtifactRef {
  /** As declared: relative to the working dir, or absolute. */
  path: string;
  manifestSha: string;
  files: number;
  sizeBytes: number;
}

/** What the agent tells about the machine a job ran on. */
export interface HostFacts {
  hostname: string;
  platform: string;
  arch: string;
  cpus: number;
  memoryMiB: number;
  nodeVersion: string;
  agentVersion: string;
}

export interface TagRecord {
  tag: string;
  runName: string;
  createdAt: string;
}

/** One delivery of the job to an agent; written only by that agent. */
export interface AttemptRecord {
  attempt: number;
  agentId: string;
  host: string;
  startedAt: string;
  heartbeatAt: string;
  /** How long after the last heartbeat the lease lapses. */
  leaseMs: number;
  state: 'running' | 'ended';
  endedAt?: string;
  hostFacts?: HostFacts;
  /** Set on EC2: which instance ran this attempt. */
  instance?: InstanceFacts;
  /** Why the attempt was handed back unfinished (a spot interruption notice). */
  interruption?: string;
}

/** The EC2 instance behind an attempt, from the instance metadata service. */
export interface InstanceFacts {
  id: string;
  type: string;
  market: 'spot' | 'on-demand';
}

/** The one final status of a run, created exactly once by whoever ends it. */
export interface FinalRecord {
  status: FinalStatus;
  exitCode: number | null;
  reason: string | null;
  finishedAt: string;
  attempt: number | null;
  /** Set when a cached run reused the outputs of an earlier run instead of running. */
  cacheOf?: string;
}

export interface StopRequest {
  abort: boolean;
  requestedAt: string;
}

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
    `repos/${repoId}/runs/${run}/logs/${String(attempt).padStart(4, '0')}-${String(seq).padStart(8, '0')}.jsonl`,
};

export async function readJson<T>(store: Store, key: string): Promise<T | null> {
  const buf = await store.get(key);
  return buf ? (JSON.parse(buf.toString('utf8')) as T) : null;
}

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

/** Creates the final status unless one exists; returns the final status that stands. */
export async function settleRun(store: Store, repoId: string, run: string, final: FinalRecord): Promise<FinalRecord> {
  try {
    await store.put(runKeys.final(repoId, run), JSON.stringify(final, null, 2), { ifAbsent: true });
    await store.put(endedKey(repoId, run, final), '');
    return final;
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
    return (await readJson<FinalRecord>(store, runKeys.final(repoId, run))) ?? final;
  }
}

/** Reads everything about one run; NotFoundError if there is no such run. */
export async function loadRun(store: Store, repoId: string, run: string, nowMs: number = Date.now()): Promise<RunView> {
  const [record, final, stop, artifacts, attemptObjs] = await Promise.all([
    readJson<RunRecord>(store, runKeys.record(repoId, run)),
    readJson<FinalRecord>(store, runKeys.final(repoId, run)),
    readJson<StopRequest>(store, runKeys.stop(repoId, run)),
    readJson<ArtifactIndex>(store, runKeys.artifacts(repoId, run)),
    store.list(runKeys.attempts(repoId, run)),
  ]);
  if (!record) throw new NotFoundError(`run \`${run}\` does not exist: see \`dstack ps -a\``);
  const attempts = (await Promise.all(attemptObjs.map((o) => readJson<AttemptRecord>(store, o.key)))).filter(
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
 * The runs of a repo, newest first, from the run index: finished runs cost nothing beyond the
 * listing; unfinished ones (few) are read in full.
 */
export async function listRuns(store: Store, repoId: string, o: { nowMs?: number } = {}): Promise<RunRow[]> {
  const nowMs = o.nowMs ?? Date.now();
  const summaries = await listSummaries(store, repoId);
  const rows = await Promise.all(
    summaries.map(async (summary): Promise<RunRow | null> => {
      if (summary.ended) return { summary, status: summary.ended.status, view: null };
      const view = await loadRun(store, repoId, summary.runName, nowMs).catch((e: unknown) => {
        if (e instanceof NotFoundError) return null;
        throw e;
      });
      if (!view) return null;
      // The settler stopped between the final status and its index key: finish its work.
      if (view.final && !summary.ended) await store.put(endedKey(repoId, summary.runName, view.final), '');
      return { summary, status: view.status, view };
    }),
  );
  return rows.filter((r): r is RunRow => r !== null);
}

export function isFinished(status: RunStatus): status is FinalStatus {
  return status === 'done' || status === 'failed' || status === 'stopped';
}
