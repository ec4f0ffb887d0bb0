import { resolve } from 'node:path';
import { checkArtifactPath } from '../../common/artifacts/manifest.js';
import { artifactTarget, restoreTree } from '../../common/artifacts/restore.js';
import { repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';
import { formatBytes } from '../output.js';
import { resolveTarget } from '../target.js';

/** `dstack artifacts list (RUN | :TAG)`: paths, file counts and sizes. */
export async function artifactsListCommand(ctx: Context, o: { run: string; json: boolean }): Promise<number> {
  const info = await repoInfo(ctx.cwd);
  const view = await resolveTarget(ctx.store, info.repoId, o.run);
  const artifacts = view.artifacts?.artifacts ?? [];
  if (o.json) {
    ctx.out.json(artifacts);
    return 0;
  }
  if (artifacts.length === 0) {
    ctx.out.line(`Run ${view.record.runName} has no saved artifacts.`);
    return 0;
  }
  ctx.out.table(
    ['ARTIFACT', 'FILES', 'SIZE'],
    artifacts.map((a) => [a.path, String(a.files), formatBytes(a.sizeBytes)]),
  );
  return 0;
}

/** `dstack artifacts download (RUN | :TAG) [-o DIR]`: every file checked against its hash. */
export async function artifactsDownloadCommand(ctx: Context, o: { run: string; output: string }): Promise<number> {
  const info = await repoInfo(ctx.cwd);
  const view = await resolveTarget(ctx.store, info.repoId, o.run);
  const artifacts = view.artifacts?.artifacts ?? [];
  if (artifacts.length === 0) {
    ctx.out.line(`Run ${view.record.runName} has no saved artifacts.`);
    return 0;
  }
  const outDir = resolve(ctx.cwd, o.output);
  for (const a of artifacts) checkArtifactPath(a.path);
  for (const a of artifacts) {
    // An absolute artifact (say /opt/conda/envs/x) lands under DIR at the same path, never at the path
    // itself; the index comes from the store, so a `..` in it is refused before anything is written.
    const dest = await artifactTarget(outDir, a.path, 'under-base');
    const bar = ctx.out.progress(`downloading ${a.path}`, a.sizeBytes);
    await restoreTree(ctx.store, a.manifestSha, dest, (done) => bar.update(done));
    bar.done();
    ctx.out.line(`${a.path}: ${a.files} files, ${formatBytes(a.sizeBytes)} -> ${dest}`);
  }
  return 0;
}
