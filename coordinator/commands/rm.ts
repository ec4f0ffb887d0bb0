import { UsageError } from '../../common/errors.js';
import { CorruptRecordError } from '../../common/records/read.js';
import { RunRecordSchema, TagRecordSchema } from '../../common/records/runs.js';
import { indexedOwnerByName, indexKeysByName, indexKeysOf } from '../../common/run-index.js';
import { isFinished, listRuns, loadRun, mayBeRunning, readJson, runKeys, type RunRecord } from '../../common/runs.js';
import type { Store } from '../../common/ports.js';
import { repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';
import { refuseOthers, splitByOwner } from '../owners.js';

export interface RmOptions {
  run: string | undefined;
  all: boolean;
  yes: boolean;
  /** Delete runs that tags point to, and those tags with them, and other owners' runs. */
  force?: boolean;
}

/** What rm needs of a run: its name, and the record fields its index keys are made of unless the record is damaged. */
type Target = { runName: string; indexed: Pick<RunRecord, 'runName' | 'submittedAt' | 'workflow' | 'maxAttempts' | 'owner'> | null; owner?: string | undefined; ownerIsCut?: boolean };

/**
 * `dstack rm (RUN | -a) [-y] [--force]`: deletes finished runs, their records and logs (also runs
 * whose records are damaged); a tagged run, or another owner's run, only with --force (-a leaves
 * other owners' runs alone).
 */
export async function rmCommand(ctx: Context, o: RmOptions): Promise<number> {
  if (!o.run && !o.all) throw new UsageError('name a run or use --all: dstack rm (RUN | -a) [-y] [--force]');
  const info = await repoInfo(ctx.cwd);
  const repoId = info.repoId;
  let targets: Target[];
  if (o.run) {
    targets = [await oneTarget(ctx, repoId, o.run, o.force ?? false)];
  } else {
    const rows = await listRuns(ctx.store, repoId, { onCorrupt: (e) => ctx.out.note(`warning: ${e.message}; remove that run by name`) });
    const finished = await Promise.all(rows.filter((r) => isFinished(r.status)).map((r) => withOwner(ctx.store, repoId, { runName: r.summary.runName, indexed: r.summary })));
    const { mine, others } = await splitByOwner(ctx, finished, o.force ?? false);
    if (others.length > 0) ctx.out.note(`Leaving ${others.length} run(s) of other owners alone (add --force to delete them too).`);
    targets = mine;
  }
  if (targets.length === 0) {
    ctx.out.line('No finished runs to delete.');
    return 0;
  }
  const tags = await tagsByRun(ctx.store, repoId, (e) => ctx.out.note(`warning: ${e.message}`));
  const tagged = targets.filter((t) => tags.has(t.runName));
  if (tagged.length > 0 && !o.force) {
    const which = tagged.map((t) => `run ${t.runName} is tagged ${(tags.get(t.runName) ?? []).join(', ')}`).join('; ');
    throw new UsageError(`${which}: delete the tags first (\`dstack tags delete TAG\`), or add --force to delete the tags with the run`);
  }
  const what = o.run ? `the run ${o.run}` : `${targets.length} finished run(s)`;
  if (!(await ctx.confirm(`Delete ${what}?`, o.yes))) return 1;
  for (const { runName, indexed } of targets) {
    // The values of its bare env names go first: a run that no longer exists cannot be restarted.
    const scope = { repoId, runName };
    if (ctx.secrets) for (const name of await pinnedNames(ctx, scope)) await ctx.secrets.delete(scope, name);
    const objects = await ctx.store.list(runKeys.prefix(repoId, runName));
    // The index keys and the record go last, so an interrupted rm leaves a run that can be removed again.
    const record = runKeys.record(repoId, runName);
    await ctx.store.delete(objects.map((x) => x.key).filter((k) => k !== record));
    const index = indexed ? await indexKeysOf(ctx.store, repoId, indexed) : await indexKeysByName(ctx.store, repoId, runName);
    await ctx.store.delete([...index, record]);
    const its = tags.get(runName) ?? [];
    if (its.length > 0) await ctx.store.delete(its.map((t) => runKeys.tag(repoId, t)));
    ctx.out.line(its.length > 0 ? `Deleted ${runName} and its tags ${its.join(', ')}.` : `Deleted ${runName}.`);
  }
  return 0;
}

/** The tags of a repo, by the run each points to; a damaged tag record is told about and left out (it can no longer lead to a run). */
async function tagsByRun(store: Store, repoId: string, onCorrupt: (e: CorruptRecordError) => void): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const o of await store.list(runKeys.tags(repoId))) {
    let tag;
    try {
      tag = await readJson(store, o.key, TagRecordSchema);
    } catch (e) {
      if (!(e instanceof CorruptRecordError)) throw e;
      onCorrupt(e);
      continue;
    }
    if (!tag) continue;
    out.set(tag.runName, [...(out.get(tag.runName) ?? []), tag.tag].sort());
  }
  return out;
}

/**
 * The names of the values pinned to a run: those its spec names (`runSecrets`), and those the store
 * lists. Both, since Secrets Manager's list may lag a put by minutes, and a damaged record names none.
 */
async function pinnedNames(ctx: Context, scope: { repoId: string; runName: string }): Promise<Set<string>> {
  const record = await readJson(ctx.store, runKeys.record(scope.repoId, scope.runName), RunRecordSchema).catch((e: unknown) => {
    if (e instanceof CorruptRecordError) return null;
    throw e;
  });
  return new Set([...(record?.spec.runSecrets ?? []), ...((await ctx.secrets?.list(scope)) ?? [])]);
}

/**
 * The target with its owner from its record: the index may hold a shortened owner. Runs indexed
 * without one were recorded before owners existed, and their records have none either.
 */
async function withOwner(store: Store, repoId: string, t: Target): Promise<Target> {
  if (t.indexed?.owner === undefined) return t;
  const record = await readJson(store, runKeys.record(repoId, t.runName), RunRecordSchema).catch((e: unknown) => {
    if (e instanceof CorruptRecordError) return null;
    throw e;
  });
  // A damaged record is kept by the owner the index names: -a never deletes what may be someone else's.
  return record ? { ...t, owner: record.owner } : { ...t, owner: t.indexed.owner, ownerIsCut: true };
}

/** The named run, if it is finished and the caller's (or --force); a run with a damaged record is named in one line, and may go unless it may still be running. */
async function oneTarget(ctx: Context, repoId: string, run: string, force: boolean): Promise<Target> {
  try {
    const view = await loadRun(ctx.store, repoId, run);
    await refuseOthers(ctx, view.record, 'delete', force);
    if (!isFinished(view.status)) throw new UsageError(`run ${run} is not finished yet: stop it first with \`dstack stop ${run}\``);
    return { runName: run, indexed: view.record };
  } catch (e) {
    if (!(e instanceof CorruptRecordError)) throw e;
    ctx.out.note(`warning: ${e.message}`);
    // The owner the index names (cut short) stands in for the record's: a damaged record is no way around the check.
    await refuseOthers(ctx, { runName: run, owner: await indexedOwnerByName(ctx.store, repoId, run), ownerIsCut: true }, 'delete', force);
    if (await mayBeRunning(ctx.store, repoId, run)) throw new UsageError(`run ${run} may still be running: stop it first with \`dstack stop ${run}\``);
    return { runName: run, indexed: null };
  }
}
