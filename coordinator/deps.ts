import { NotFoundError } from '../common/errors.js';
import type { Store } from '../common/ports.js';
import { TagRecordSchema } from '../common/records/runs.js';
import { listRuns, loadRun, readJson, runKeys } from '../common/runs.js';
import type { DepSpec, PinnedDep } from '../common/spec/job-spec.js';

/**
 * Resolves deps at submit time: `workflow` to the latest successful run of that workflow, `tag` to
 * the tagged run. Each is pinned to its run and the exact manifests of its artifacts.
 */
export async function resolveDeps(store: Store, repoId: string, deps: DepSpec[]): Promise<PinnedDep[]> {
  const pinned: PinnedDep[] = [];
  for (const dep of deps) pinned.push(await resolveDep(store, repoId, dep));
  return pinned;
}

/** For dry runs: pins what it can and returns the reasons for the rest instead of throwing. */
export async function tryResolveDeps(store: Store, repoId: string, deps: DepSpec[]): Promise<{ pinned: PinnedDep[]; unresolved: string[] }> {
  const pinned: PinnedDep[] = [];
  const unresolved: string[] = [];
  for (const dep of deps) {
    try {
      pinned.push(await resolveDep(store, repoId, dep));
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
      unresolved.push(e.message);
    }
  }
  return { pinned, unresolved };
}

async function resolveDep(store: Store, repoId: string, dep: DepSpec): Promise<PinnedDep> {
  const depRepo = dep.repo ? `github.com/${dep.repo}` : repoId;
  const where = dep.repo ? ` in ${dep.repo}` : '';
  let runName: string;
  if (dep.kind === 'tag') {
    const tag = await readJson(store, runKeys.tag(depRepo, dep.name), TagRecordSchema);
    if (!tag) throw new NotFoundError(`dep \`tag: ${dep.name}\`: there is no tag \`${dep.name}\`${where}: create it with \`dstack tags add ${dep.name} RUN\` or \`dstack run WORKFLOW -t ${dep.name}\``);
    const view = await loadRun(store, depRepo, tag.runName);
    if (view.status !== 'done') throw new NotFoundError(`dep \`tag: ${dep.name}\`: its run ${tag.runName} is ${view.status}, not done: tag a successful run instead`);
    runName = tag.runName;
  } else {
    const done = (await listRuns(store, depRepo)).find((r) => r.summary.workflow === dep.name && r.status === 'done');
    if (!done) throw new NotFoundError(`dep \`workflow: ${dep.name}\`: no successful run of \`${dep.name}\`${where} yet: run it first with \`dstack run ${dep.name}\``);
    runName = done.summary.runName;
  }
  const view = await loadRun(store, depRepo, runName);
  return {
    kind: dep.kind,
    name: dep.name,
    repoId: depRepo,
    runName,
    artifacts: (view.artifacts?.artifacts ?? []).map((a) => ({ path: a.path, manifestSha: a.manifestSha })),
  };
}
