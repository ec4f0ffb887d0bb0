import { lstat, readdir, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import pLimit from 'p-limit';
import type { Backend } from './backend.js';
import { LocalQueue } from './local/local-queue.js';
import { LocalStore } from './local/local-store.js';
import { blobKey, manifestKey, type Manifest } from './artifacts/manifest.js';
import { readManifest } from './artifacts/restore.js';
import { errnoCode, toError } from './errors.js';
import { readCandidates, splitCandidates, writeCandidates, type GcCandidate } from './gc-candidates.js';
import { enqueuedKey, pastOrphanGrace, settleOrphan } from './orphans.js';
import type { ObjectInfo, Store } from './ports.js';
import { ArtifactIndexSchema, AttemptRecordSchema, RunRecordSchema } from './records/runs.js';
import { submittedKey } from './run-index.js';
import { readJson, runKeys } from './runs.js';

/** Store reads in flight at once while marking. */
const READS_AT_ONCE = 16;

/**
 * Temp files younger than this are never removed: a write may be under way. A blob or manifest goes
 * only once two sweeps at least this far apart found it unreferenced and unmodified for this long.
 */
export const GC_GRACE_MS = 60 * 60 * 1000;

export interface GcOptions {
  store: Store;
  /** The agents' work folders on this machine: `<workRoot>/<agentId>/<run>-<attempt>-<hex>`. */
  workRoot?: string;
  /** The agents alive on this machine and when each started (the local agent registry). */
  liveAgents?: () => Promise<Array<{ id: string; startedAt: string }>>;
  /** Local staging folders (the local store's and queue's temp files). */
  tempDirs?: string[];
  /** The grace for temp files, blobs and manifests (default GC_GRACE_MS). */
  graceMs?: number;
  /** A run recorded but never queued is settled as failed after this long (see common/orphans.ts). */
  orphanGraceMs: number;
  /**
   * Sweep the store at most this often (the agents at start: the listing and marking read every
   * run); a `gc/last-store-sweep.json` in the store records the last sweep. Unset: always sweep.
   */
  storeEveryMs?: number;
  /** Report what would go, remove nothing. */
  dryRun: boolean;
  nowMs?: number;
}

export interface GcItem {
  kind: 'work folder' | 'temp file' | 'manifest' | 'blob';
  /** A path on this machine, or a store key. */
  what: string;
  sizeBytes: number;
}

export interface GcReport {
  removed: GcItem[];
  /** Blobs and manifests no run references that wait for a later sweep, and when they may go. */
  candidates: GcCandidate[];
  /** Runs settled as failed because their submitter died before queuing them. */
  settled: string[];
  /** What was left alone, and why (one line each). */
  notes: string[];
}

/**
 * The collector (`dstack gc`, and every agent at start): job folders of dead attempts, stale temp
 * files, never-queued runs, and artifact blobs and manifests that no run references. It removes
 * nothing a live run may still use: a work folder of a live agent's current incarnation, no blob
 * or manifest while any job may be saving, and otherwise only those two sweeps found unreferenced
 * (see sweepStore).
 */
export async function collectGarbage(o: GcOptions): Promise<GcReport> {
  const report: GcReport = { removed: [], candidates: [], settled: [], notes: [] };
  const nowMs = o.nowMs ?? Date.now();
  const graceMs = o.graceMs ?? GC_GRACE_MS;
  if (o.workRoot) await sweepWork(o, o.workRoot, report);
  for (const dir of o.tempDirs ?? []) await sweepTemp(o, dir, nowMs, graceMs, report);
  if (await storeSweepDue(o, nowMs, report)) await sweepStore(o, nowMs, graceMs, report);
  return report;
}

/**
 * A job folder belongs to a dead attempt when its agent is not alive on this machine, or when it
 * is older than the live agent's start (an earlier incarnation under the same agent id).
 */
async function sweepWork(o: GcOptions, workRoot: string, report: GcReport): Promise<void> {
  const live = new Map((await (o.liveAgents?.() ?? Promise.resolve([]))).map((a) => [a.id, Date.parse(a.startedAt)]));
  for (const agentId of await dirEntries(workRoot)) {
    const agentDir = join(workRoot, agentId);
    if (!(await isDir(agentDir))) continue;
    const startedAt = live.get(agentId);
    for (const name of await dirEntries(agentDir)) {
      const path = join(agentDir, name);
      const st = await lstat(path).catch(() => undefined);
      if (!st) continue;
      if (startedAt !== undefined && !(st.mtimeMs < startedAt)) continue;
      const sizeBytes = await treeSize(path);
      if (!o.dryRun) await rm(path, { recursive: true, force: true });
      report.removed.push({ kind: 'work folder', what: path, sizeBytes });
    }
    if (startedAt === undefined && !o.dryRun) await rmdir(agentDir).catch(() => undefined);
  }
}

async function sweepTemp(o: GcOptions, dir: string, nowMs: number, graceMs: number, report: GcReport): Promise<void> {
  for (const name of await dirEntries(dir)) {
    const path = join(dir, name);
    const st = await lstat(path).catch(() => undefined);
    if (!st?.isFile() || nowMs - st.mtimeMs < graceMs) continue;
    if (!o.dryRun) await rm(path, { force: true });
    report.removed.push({ kind: 'temp file', what: path, sizeBytes: st.size });
  }
}

export const LAST_STORE_SWEEP = 'gc/last-store-sweep.json';

/** Whether the store part is due; if so (and not a dry run), notes that it starts now. */
async function storeSweepDue(o: GcOptions, nowMs: number, report: GcReport): Promise<boolean> {
  if (o.storeEveryMs === undefined) return true;
  const last = (await o.store.list(LAST_STORE_SWEEP))[0];
  if (last?.modifiedAtMs !== undefined && nowMs - last.modifiedAtMs < o.storeEveryMs) {
    report.notes.push(`store not swept: the last sweep was ${Math.round((nowMs - last.modifiedAtMs) / 60_000)} min ago`);
    return false;
  }
  if (!o.dryRun) await o.store.put(LAST_STORE_SWEEP, JSON.stringify({ at: new Date(nowMs).toISOString() }));
  return true;
}

/** What the listing of `repos/` tells about one run. */
interface RunKeys {
  repoId: string;
  runName: string;
  record: boolean;
  final: boolean;
  enqueued: boolean;
  artifacts: boolean;
  attempts: string[];
}

/**
 * Mark (every run's artifacts and pinned deps), then sweep manifests and blobs, in two phases.
 *
 * A save reuses a blob (or manifest) already in the store, and writes the manifest and index that
 * reference it only at its end, so a blob unreferenced at the mark may be in use. The busy check
 * covers agents' jobs while their heartbeat runs, but not a save that starts after the mark, nor
 * `dstack tags add -a` (no attempt record). So a sweep removes an object only when
 *   - a sweep at least the grace earlier recorded it as a candidate (unreferenced, older than the
 *     grace; the record is gc/candidates.json), and
 *   - this sweep, listing after its own mark, still finds it unreferenced and unmodified for the grace.
 * A save that reuses an object touches it (Store.touch: the local mtime, an S3 copy onto itself),
 * so a reuse seen by this listing keeps it unless that save has gone on, unfinished, for a whole
 * grace since (a job's save keeps its heartbeat, which the busy check sees). The candidate record
 * adds a second look a grace apart, so that no single listing decides alone. What is left: a touch
 * in the moment between this listing and the delete; that save then writes a manifest whose blob
 * is gone, which restore reports as a missing blob.
 */
async function sweepStore(o: GcOptions, nowMs: number, graceMs: number, report: GcReport): Promise<void> {
  const { store } = o;
  const listed = await store.list('repos/');
  const keys = new Set(listed.map((x) => x.key));
  const runs = new Map<string, RunKeys>();
  for (const { key } of listed) {
    const m = /^repos\/([^/]+)\/runs\/([^/]+)\/(.+)$/.exec(key);
    if (!m) continue;
    const [, repoId = '', runName = '', rest = ''] = m;
    const id = `${repoId}/${runName}`;
    let r = runs.get(id);
    if (!r) runs.set(id, (r = { repoId, runName, record: false, final: false, enqueued: false, artifacts: false, attempts: [] }));
    if (key === runKeys.record(repoId, runName)) r.record = true;
    else if (key === runKeys.final(repoId, runName)) r.final = true;
    else if (key === enqueuedKey(repoId, runName)) r.enqueued = true;
    else if (key === runKeys.artifacts(repoId, runName)) r.artifacts = true;
    else if (rest.startsWith('attempts/')) r.attempts.push(key);
  }
  const liveManifests = new Set<string>();
  let busy: string | undefined;
  let unsure: string | undefined;
  const limit = pLimit(READS_AT_ONCE);
  const markRun = async (r: RunKeys): Promise<void> => {
    try {
      const record = r.record ? await readJson(store, runKeys.record(r.repoId, r.runName), RunRecordSchema) : null;
      for (const dep of record?.spec.pinnedDeps ?? []) for (const a of dep.artifacts) liveManifests.add(a.manifestSha);
      const index = r.artifacts ? await readJson(store, runKeys.artifacts(r.repoId, r.runName), ArtifactIndexSchema) : null;
      for (const a of index?.artifacts ?? []) liveManifests.add(a.manifestSha);
      if (r.final) return;
      const lastKey = r.attempts.sort()[r.attempts.length - 1];
      const last = lastKey ? await readJson(store, lastKey, AttemptRecordSchema) : null;
      // A job that may still be saving: an attempt not ended whose heartbeat is within the grace
      // (an attempt saves before it settles the run, so a finished run saves no more).
      if (last?.state === 'running' && nowMs - Date.parse(last.heartbeatAt) < graceMs) busy ??= r.runName;
      if (!record) return;
      // createRun stopped between the record and its index key: index it, so ps shows it and rm can delete it.
      const indexKey = submittedKey(r.repoId, record);
      if (!keys.has(indexKey)) {
        if (!o.dryRun) await store.put(indexKey, '');
        report.notes.push(`indexed run ${r.runName}: its index key was missing`);
      }
      if (!r.enqueued && pastOrphanGrace(record, r.attempts.length, o.orphanGraceMs, nowMs)) {
        if (!o.dryRun) await settleOrphan(store, r.repoId, r.runName, nowMs);
        report.settled.push(r.runName);
      }
    } catch (e) {
      unsure ??= `run ${r.runName} (${toError(e).message})`;
    }
  };
  await Promise.all([...runs.values()].map((r) => limit(() => markRun(r))));
  if (busy) {
    report.notes.push(`kept every blob and manifest: run ${busy} may still be saving artifacts`);
    return;
  }
  if (unsure) {
    report.notes.push(`kept every blob and manifest: could not read ${unsure}`);
    return;
  }
  const liveBlobs = new Set<string>();
  let unreadable: string | undefined;
  await Promise.all(
    [...liveManifests].map((sha) =>
      limit(async () => {
        let m: Manifest | null;
        try {
          m = await ((await store.head(manifestKey(sha))) ? await readManifest(store, sha) : null);
        } catch (e) {
          unreadable ??= `manifest ${sha} is unreadable (${toError(e).message})`;
          return;
        }
        for (const e of m?.entries ?? []) {
          for (const c of e.chunks ?? []) liveBlobs.add(c);
          if (e.pack) liveBlobs.add(e.pack.sha);
        }
      }),
    ),
  );
  if (unreadable) {
    report.notes.push(`kept every blob and manifest: ${unreadable}`);
    return;
  }
  const old = (x: ObjectInfo): boolean => x.modifiedAtMs !== undefined && nowMs - x.modifiedAtMs >= graceMs;
  const previous = await readCandidates(store, report.notes);
  // Listed after the mark, so that a save which reused an object since is seen by its new mtime.
  const manifests = (await store.list('manifests/')).filter((x) => {
    const sha = /^manifests\/([0-9a-f]{64})\.json$/.exec(x.key)?.[1];
    return sha !== undefined && !liveManifests.has(sha) && old(x);
  });
  const blobs = (await store.list('blobs/sha256/')).filter((x) => {
    const sha = /^blobs\/sha256\/[0-9a-f]{2}\/([0-9a-f]{64})$/.exec(x.key)?.[1];
    return sha !== undefined && blobKey(sha) === x.key && !liveBlobs.has(sha) && old(x);
  });
  const m = splitCandidates('manifest', manifests, previous, nowMs, graceMs);
  const b = splitCandidates('blob', blobs, previous, nowMs, graceMs);
  report.candidates.push(...m.waiting, ...b.waiting);
  // The record first: a delete that fails leaves its objects out of it, so they wait again (never less).
  if (!o.dryRun) await writeCandidates(store, report.candidates, nowMs);
  // Manifests first: a manifest is never left pointing at removed blobs.
  for (const items of [m.due, b.due]) {
    if (!o.dryRun) await store.delete(items.map((x) => x.what));
    for (const x of items) report.removed.push({ kind: x.kind, what: x.what, sizeBytes: x.sizeBytes });
  }
}

async function dirEntries(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return [];
    throw e;
  }
}

async function isDir(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => undefined))?.isDirectory() ?? false;
}

/** Bytes under a path, symlinks not followed. */
async function treeSize(path: string): Promise<number> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return 0;
  if (!st.isDirectory()) return st.size;
  let n = 0;
  for (const name of await dirEntries(path)) n += await treeSize(join(path, name));
  return n;
}

/** What the collector sweeps on this machine for a backend: its agents' work folders and the local transports' temp files. */
export function localTargets(backend: Backend): Pick<GcOptions, 'workRoot' | 'liveAgents' | 'tempDirs'> {
  const tempDirs = [join(backend.registry.dir, '.tmp')];
  if (backend.store instanceof LocalStore) tempDirs.push(backend.store.tmp);
  if (backend.queue instanceof LocalQueue) tempDirs.push(backend.queue.tmpDir);
  return { workRoot: join(backend.root, 'work'), liveAgents: () => backend.registry.live(), tempDirs };
}
