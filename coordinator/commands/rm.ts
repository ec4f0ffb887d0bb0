import { UsageError } from '../../common/errors.js';
import { indexKeysOf } from '../../common/run-index.js';
import { isFinished, listRuns, loadRun, readJson, runKeys, type RunRecord, type TagRecord } from '../../common/runs.js';
import type { Store } from '../../common/ports.js';
import { repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';

export interface RmOptions {
  run: string | undefined;
  all: boolean;
  yes: boolean;
  /** Delete runs that tags point to, and those tags with them. */
  force?: boolean;
}

/** `dstack rm (RUN | -a) [-y] [--force]`: deletes finished runs, their records and logs; a tagged run only with --force. */
export async function rmCommand(ctx: Context, o: RmOptions): Promise<number> {
  if (!o.run && !o.all) throw new UsageError('name a run or use --all: dstack rm (RUN | -a) [-y] [--force]');
  const info = await repoInfo(ctx.cwd);
  let targets: Array<Pick<RunRecord, 'runName' | 'submittedAt' | 'workflow' | 'maxAttempts'>>;
  if (o.run) {
    const view = await loadRun(ctx.store, info.repoId, o.run);
    if (!isFinished(view.status)) throw new UsageError(`run ${o.run} is not finished yet: stop it first with \`dstack stop ${o.run}\``);
    targets = [view.record];
  } else {
    targets = (await listRuns(ctx.store, info.repoId)).filter((r) => isFinished(r.status)).map((r) => r.summary);
  }
  if (targets.length === 0) {
    ctx.out.line('No finished runs to delete.');
    return 0;
  }
  const repoId = info.repoId;
  const tags = await tagsByRun(ctx.store, repoId);
  const tagged = targets.filter((t) => tags.has(t.runName));
  if (tagged.length > 0 && !o.force) {
    const which = tagged.map((t) => `run ${t.runName} is tagged ${(tags.get(t.runName) ?? []).join(', ')}`).join('; ');
    throw new UsageError(`${which}: delete the tags first (\`dstack tags delete TAG\`), or add --force to delete the tags with the run`);
  }
  const what = o.run ? `the run ${o.run}` : `${targets.length} finished run(s)`;
  if (!(await ctx.confirm(`Delete ${what}?`, o.yes))) return 1;
  for (const run of targets) {
    const { runName } = run;
    const objects = await ctx.store.list(runKeys.prefix(repoId, runName));
    // The index keys and the record go last, so an interrupted rm leaves a run that can be removed again.
    const record = runKeys.record(repoId, runName);
    await ctx.store.delete(objects.map((x) => x.key).filter((k) => k !== record));
    await ctx.store.delete([...(await indexKeysOf(ctx.store, repoId, run)), record]);
    const its = tags.get(runName) ?? [];
    if (its.length > 0) await ctx.store.delete(its.map((t) => runKeys.tag(repoId, t)));
    ctx.out.line(its.length > 0 ? `Deleted ${runName} and its tags ${its.join(', ')}.` : `Deleted ${runName}.`);
  }
  return 0;
}

/** The tags of a repo, by the run each points to. */
async function tagsByRun(store: Store, repoId: string): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const o of await store.list(runKeys.tags(repoId))) {
    const tag = await readJson<TagRecord>(store, o.key);
    if (!tag) continue;
    out.set(tag.runName, [...(out.get(tag.runName) ?? []), tag.tag].sort());
  }
  return out;
}
