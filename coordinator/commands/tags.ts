import { randomBytes } from 'node:crypto';
import { realpath, stat } from 'node:fs/promises';
import { isAbsolute, relative, resolve } from 'node:path';
import { saveTree } from '../../common/artifacts/save.js';
import { ConflictError, NotFoundError, UsageError } from '../../common/errors.js';
import { createRun, loadRun, readJson, runKeys, settleRun, type ArtifactIndex, type TagRecord } from '../../common/runs.js';
import type { JobSpec } from '../../common/spec/job-spec.js';
import { repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';
import { ago } from '../output.js';
import { checkTagName } from '../submit.js';
import { TagRecordSchema } from '../../common/records/runs.js';
import { treeSizeBytes } from '../../common/progress.js';

/** `dstack tags add TAG RUN`, or `dstack tags add TAG -a PATH...` to upload local folders as a new finished run. */
export async function tagsAddCommand(ctx: Context, o: { tag: string; run: string | undefined; paths: string[] }): Promise<number> {
  checkTagName(o.tag);
  if ((o.run === undefined) === (o.paths.length === 0)) throw new UsageError('name a run or give -a PATH (not both): dstack tags add TAG (RUN | -a PATH...)');
  const info = await repoInfo(ctx.cwd);
  if (await readJson(ctx.store, runKeys.tag(info.repoId, o.tag), TagRecordSchema)) {
    throw new ConflictError(`tag \`${o.tag}\` already exists: delete it first with \`dstack tags delete ${o.tag}\``);
  }
  let runName: string;
  if (o.run) {
    const view = await loadRun(ctx.store, info.repoId, o.run);
    if (view.status !== 'done') throw new UsageError(`run ${o.run} is ${view.status}: only a successful run can be tagged`);
    runName = o.run;
  } else {
    runName = await uploadAsRun(ctx, info.repoId, info.root, o.paths);
  }
  const tag: TagRecord = { tag: o.tag, runName, createdAt: new Date().toISOString() };
  await ctx.store.put(runKeys.tag(info.repoId, o.tag), JSON.stringify(tag, null, 2), { ifAbsent: true });
  ctx.out.line(`Tag ${o.tag} -> run ${runName}.`);
  return 0;
}

/** Saves local folders as the artifacts of a new, finished run. Paths inside the repo are kept relative to its root. */
async function uploadAsRun(ctx: Context, repoId: string, root: string, paths: string[]): Promise<string> {
  const folders: Array<{ abs: string; path: string }> = [];
  for (const p of paths) {
    const abs = resolve(ctx.cwd, p);
    const st = await stat(abs).catch(() => undefined);
    if (!st?.isDirectory()) throw new NotFoundError(`-a ${p}: no such folder`);
    const rel = relative(root, abs);
    folders.push({ abs, path: rel === '' || rel.startsWith('..') || isAbsolute(rel) ? abs : rel });
  }
  const saved = [];
  for (const f of folders) {
    // The user named this folder to upload: a link to it is followed here (a job's artifact path is not).
    const dir = await realpath(f.abs);
    const bar = ctx.out.progress(`uploading ${f.path}`, ctx.out.isTTY ? await treeSizeBytes(dir) : 0);
    const s = await saveTree(ctx.store, dir, { onProgress: (n) => bar.update(n) });
    bar.done();
    saved.push({ path: f.path, manifestSha: s.manifestSha, files: s.files, sizeBytes: s.sizeBytes });
  }
  const now = new Date().toISOString();
  const spec: JobSpec = {
    specVersion: 1,
    repoId,
    runName: '',
    jobId: randomBytes(6).toString('hex'),
    workflow: '(upload)',
    provider: 'bash',
    commands: [],
    env: {},
    workingDir: '.',
    artifacts: folders.map((f) => ({ path: f.path, mount: false })),
    deps: [],
    pinnedDeps: [],
    portCount: 0,
    resources: { interruptible: false, local: true },
    runArgs: [],
    code: { commit: null, branch: null, remoteUrl: null, archiveKey: null, diffKey: null, diffSha256: null, untrackedKey: null, untrackedSha256: null },
    submittedAt: now,
    cache: false,
  };
  const record = await createRun(ctx.store, (runName) => ({
    runName,
    repoId,
    workflow: '(upload)',
    jobId: spec.jobId,
    submittedAt: now,
    maxAttempts: 1,
    spec: { ...spec, runName },
    overrides: paths.flatMap((p) => ['-a', p]),
    toolVersion: ctx.toolVersion,
  }));
  const index: ArtifactIndex = { artifacts: saved, savedAt: now, complete: true };
  await ctx.store.put(runKeys.artifacts(repoId, record.runName), JSON.stringify(index, null, 2));
  await settleRun(ctx.store, repoId, record.runName, { status: 'done', exitCode: 0, reason: 'uploaded with dstack tags add', finishedAt: now, attempt: null });
  return record.runName;
}

/** `dstack tags list`. */
export async function tagsListCommand(ctx: Context, o: { json: boolean }): Promise<number> {
  const info = await repoInfo(ctx.cwd);
  const objects = await ctx.store.list(runKeys.tags(info.repoId));
  const tags = (await Promise.all(objects.map((x) => readJson(ctx.store, x.key, TagRecordSchema)))).filter((t): t is TagRecord => t !== null);
  const rows = await Promise.all(
    tags.map(async (t) => {
      const view = await loadRun(ctx.store, info.repoId, t.runName).catch(() => null);
      return { ...t, workflow: view?.record.workflow ?? '(deleted)', artifacts: (view?.artifacts?.artifacts ?? []).map((a) => a.path) };
    }),
  );
  if (o.json) {
    ctx.out.json(rows);
    return 0;
  }
  if (rows.length === 0) {
    ctx.out.line('No tags yet. Tag a run with `dstack tags add TAG RUN` or `dstack run WORKFLOW -t TAG`.');
    return 0;
  }
  const now = Date.now();
  ctx.out.table(['TAG', 'RUN', 'WORKFLOW', 'ARTIFACTS', 'CREATED'], rows.map((r) => [r.tag, r.runName, r.workflow, r.artifacts.join(', '), ago(r.createdAt, now)]));
  return 0;
}

/** `dstack tags delete TAG [-y]`: the tag goes; the run and its artifacts stay. */
export async function tagsDeleteCommand(ctx: Context, o: { tag: string; yes: boolean }): Promise<number> {
  const info = await repoInfo(ctx.cwd);
  if (!(await readJson(ctx.store, runKeys.tag(info.repoId, o.tag), TagRecordSchema))) throw new NotFoundError(`there is no tag \`${o.tag}\`: see \`dstack tags list\``);
  if (!(await ctx.confirm(`Delete the tag ${o.tag}?`, o.yes))) return 1;
  await ctx.store.delete([runKeys.tag(info.repoId, o.tag)]);
  ctx.out.line(`Deleted tag ${o.tag}.`);
  return 0;
}
