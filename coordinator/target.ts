import { NotFoundError } from '../common/errors.js';
import type { Store } from '../common/ports.js';
import { TagRecordSchema } from '../common/records/runs.js';
import { loadRun, readJson, runKeys, type RunView } from '../common/runs.js';

/** Resolves `RUN` or `:TAG` to a run. */
export async function resolveTarget(store: Store, repoId: string, target: string): Promise<RunView> {
  if (target.startsWith(':')) {
    const tag = await readJson(store, runKeys.tag(repoId, target.slice(1)), TagRecordSchema);
    if (!tag) throw new NotFoundError(`there is no tag \`${target.slice(1)}\`: see \`dstack tags list\``);
    return loadRun(store, repoId, tag.runName);
  }
  return loadRun(store, repoId, target);
}
