import { lchown } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { checkArtifactPath } from '../common/artifacts/manifest.js';
import { artifactTarget, restoreTree } from '../common/artifacts/restore.js';
import { HashCache, saveTree } from '../common/artifacts/save.js';
import { JobFailedError, toError } from '../common/errors.js';
import type { Store } from '../common/ports.js';
import { TransferProgress, treeSizeBytes } from '../common/progress.js';
import { readJson, runKeys, type ArtifactIndex, type SavedArtifactRef } from '../common/runs.js';
import type { JobSpec } from '../common/spec/job-spec.js';
import { ArtifactIndexSchema } from '../common/records/runs.js';
import type { JobUser } from './job-user.js';

/**
 * Where an artifact lives on the agent: relative paths under the working dir; absolute ones at their
 * declared path, or, for a job in a container (`absRoot`), under that folder of the job's, mounted at
 * the declared path inside the container only. The spec came through the queue, so a `..` is refused here too.
 */
export function artifactDir(spec: JobSpec, codeDir: string, path: string, absRoot?: string): string {
  checkArtifactPath(path);
  if (isAbsolute(path)) return absRoot === undefined ? path : join(absRoot, path);
  return join(codeDir, checkArtifactPath(spec.workingDir), path);
}

/** The absolute paths among the job's artifacts and its deps' (each once): restored and written outside the job's folder. */
export function absoluteArtifactPaths(spec: Pick<JobSpec, 'artifacts' | 'pinnedDeps'>): string[] {
  const paths = [...spec.artifacts.map((a) => a.path), ...spec.pinnedDeps.flatMap((d) => d.artifacts.map((a) => a.path))];
  return [...new Set(paths.filter((p) => isAbsolute(p)))];
}

/**
 * Restores saved artifacts at their paths; `said` and `failed` word the log line and the error for
 * one artifact. With `owner`, what is restored at an absolute path (files, folders and links the
 * manifest names, deepest first, links not followed) becomes that user's, so that the job can
 * overwrite its own checkpoint in a folder that was already there; the folder itself keeps its
 * owner (it may be a system folder). Relative paths are in the job's folder, handed over whole.
 */
async function restoreRefs(
  store: Store,
  spec: JobSpec,
  codeDir: string,
  refs: Array<{ path: string; manifestSha: string }>,
  said: (path: string, files: number) => string,
  failed: (path: string) => string,
  say: (line: string) => void,
  owner: JobUser | undefined,
  absRoot: string | undefined,
): Promise<void> {
  for (const a of refs) {
    try {
      const target =
        absRoot !== undefined && isAbsolute(a.path) ? await artifactTarget(absRoot, a.path, 'under-base') : await artifactTarget(join(codeDir, checkArtifactPath(spec.workingDir)), a.path, 'at-path');
      // The total of the progress lines is the manifest's size, which restoreTree reads and passes on.
      const meter = new TransferProgress({ label: `restoring ${a.path}`, totalBytes: 0, mode: 'log', write: say });
      const m = await restoreTree(store, a.manifestSha, target, (done, total) => meter.update(done, total));
      meter.end();
      if (owner && isAbsolute(a.path)) {
        const deepestFirst = m.entries.map((e) => e.path.split('/')).sort((x, y) => y.length - x.length);
        for (const parts of deepestFirst) await lchown(join(target, ...parts), owner.uid, owner.gid);
        if (m.link !== undefined) await lchown(target, owner.uid, owner.gid);
      }
      say(`dstack: ${said(a.path, m.files)}\n`);
    } catch (e) {
      throw new JobFailedError(`${failed(a.path)}: ${toError(e).message}`, { cause: e });
    }
  }
}

/** Restores every pinned dep's artifacts at the same paths, before the commands start. */
export async function restoreDeps(store: Store, spec: JobSpec, codeDir: string, say: (line: string) => void, owner?: JobUser, absRoot?: string): Promise<void> {
  for (const dep of spec.pinnedDeps) {
    const from = `${dep.kind} ${dep.name} (run ${dep.runName})`;
    await restoreRefs(
      store,
      spec,
      codeDir,
      dep.artifacts,
      (path, files) => `restored ${path} (${files} files) from ${from}`,
      (path) => `could not restore dep ${dep.kind} \`${dep.name}\` (run ${dep.runName}), artifact ${path}`,
      say,
      owner,
      absRoot,
    );
  }
}

/**
 * Puts back what earlier attempts of this run saved (the checkpoint of an interrupted attempt, or
 * the last incremental save of a killed one), at the same paths, so that the job resumes.
 */
export async function restoreCheckpoint(store: Store, spec: JobSpec, codeDir: string, say: (line: string) => void, owner?: JobUser, absRoot?: string): Promise<void> {
  const index = await readJson(store, runKeys.artifacts(spec.repoId, spec.runName), ArtifactIndexSchema);
  await restoreRefs(
    store,
    spec,
    codeDir,
    index?.artifacts ?? [],
    (path, files) => `resuming: restored ${path} (${files} files) as saved by the previous attempt at ${index?.savedAt ?? '?'}`,
    (path) => `could not restore the checkpoint ${path} of the previous attempt`,
    say,
    owner,
    absRoot,
  );
}

/**
 * Saves a job's artifacts and then their index. Saves are serialized, and share one hash cache, so
 * that the periodic saves of `mount: true` artifacts only upload what changed.
 */
export class ArtifactSaver {
  private readonly cache = new HashCache();
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: Store,
    private readonly spec: JobSpec,
    private readonly codeDir: string,
    /** A job in a container: where its absolute artifact paths are on this machine (see artifactDir). */
    private readonly absRoot?: string,
  ) {}

  get hasMounted(): boolean {
    return this.spec.artifacts.some((a) => a.mount);
  }

  /**
   * Saves the `mount: true` artifacts only (`final` false), or all of them (`final` true). With `say`,
   * a save that lasts says how far it is (common/progress.ts) in lines for the job's log.
   */
  save(final: boolean, say?: (line: string) => void): Promise<void> {
    const run = this.chain.then(() => this.saveNow(final, say));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async saveNow(final: boolean, say: ((line: string) => void) | undefined): Promise<void> {
    const { repoId, runName } = this.spec;
    const saved: SavedArtifactRef[] = [];
    for (const a of this.spec.artifacts.filter((x) => final || x.mount)) {
      try {
        const dir = artifactDir(this.spec, this.codeDir, a.path, this.absRoot);
        const meter = say ? new TransferProgress({ label: `saving ${a.path}`, totalBytes: await treeSizeBytes(dir), mode: 'log', write: say }) : undefined;
        const s = await saveTree(this.store, dir, { cache: this.cache, ...(meter ? { onProgress: (done: number) => meter.update(done) } : {}) });
        meter?.end();
        saved.push({ path: a.path, manifestSha: s.manifestSha, files: s.files, sizeBytes: s.sizeBytes });
      } catch (e) {
        throw new JobFailedError(`could not save artifact ${a.path}: ${toError(e).message}`, { cause: e });
      }
    }
    const index: ArtifactIndex = { artifacts: saved, savedAt: new Date().toISOString(), complete: final };
    await this.store.put(runKeys.artifacts(repoId, runName), JSON.stringify(index, null, 2));
  }
}
