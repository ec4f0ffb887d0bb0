import { ConflictError, UsageError } from '../../common/errors.js';
import { isFinished, listRuns, loadRun, readJson, runKeys, settleRun, type FinalRecord, type RunView, type StopRequest } from '../../common/runs.js';
import { repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';
import { FinalRecordSchema } from '../../common/records/runs.js';
import { refuseOthers, splitByOwner } from '../owners.js';
import { endedFacts } from '../../common/run-cost.js';

export interface StopOptions {
  run: string | undefined;
  all: boolean;
  abort: boolean;
  yes: boolean;
  /** Stop other owners' runs too. */
  force?: boolean;
}

/**
 * `dstack stop (RUN | -a) [-x] [-y] [--force]`: a queued run is stopped at once; a running one gets
 * SIGTERM (or SIGKILL with -x). Another owner's run is refused, and left out of -a, unless --force.
 */
export async function stopCommand(ctx: Context, o: StopOptions): Promise<number> {
  if (!o.run && !o.all) throw new UsageError('name a run or use --all: dstack stop (RUN | -a) [-x] [-y] [--force]');
  const info = await repoInfo(ctx.cwd);
  const force = o.force ?? false;
  let targets: RunView[];
  if (o.run) {
    const view = await loadRun(ctx.store, info.repoId, o.run);
    await refuseOthers(ctx, view.record, 'stop', force);
    targets = [view];
  } else {
    const unfinished = (await listRuns(ctx.store, info.repoId)).flatMap((r) => (r.view && !isFinished(r.status) ? [r.view] : []));
    const { mine, others } = await splitByOwner(ctx, unfinished.map((view) => ({ view, owner: view.record.owner })), force);
    if (others.length > 0) ctx.out.note(`Leaving ${others.length} run(s) of other owners alone (add --force to stop them too).`);
    targets = mine.map((t) => t.view);
  }
  if (targets.length === 0) {
    ctx.out.line('No unfinished runs to stop.');
    return 0;
  }
  const verb = o.abort ? 'Abort' : 'Stop';
  const what = o.run ? `the run ${o.run}` : `${targets.length} unfinished run(s)`;
  if (!(await ctx.confirm(`${verb} ${what}?`, o.yes))) return 1;
  let failed = 0;
  for (const view of targets) {
    if (isFinished(view.status)) {
      ctx.out.line(`Run ${view.record.runName} already ${view.status}.`);
      continue;
    }
    const final = await requestStop(ctx, view, o.abort);
    if (final) ctx.out.line(`Run ${view.record.runName} ${final.status}.`);
    else {
      failed += 1;
      ctx.out.note(`Run ${view.record.runName}: stop requested, but no agent has confirmed it yet; check with \`dstack ps ${view.record.runName}\`.`);
    }
  }
  return failed > 0 ? 1 : 0;
}

async function requestStop(ctx: Context, view: RunView, abort: boolean): Promise<FinalRecord | null> {
  const { repoId, runName } = view.record;
  const request: StopRequest = { abort, requestedAt: new Date().toISOString() };
  try {
    await ctx.store.put(runKeys.stop(repoId, runName), JSON.stringify(request), { ifAbsent: !abort });
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
  }
  if (view.status === 'submitted') {
    // No agent holds it: it ends here, and an agent that receives it later drops it.
    const final: FinalRecord = {
      status: 'stopped',
      exitCode: null,
      reason: abort ? 'aborted before it started' : 'stopped before it started',
      finishedAt: new Date().toISOString(),
      attempt: null,
    };
    // A run handed back by an interrupted agent has attempts (and cost) behind it.
    return settleRun(ctx.store, repoId, runName, final, endedFacts(view, final));
  }
  const deadline = Date.now() + ctx.config.local.stopGraceSec * 1000 + 15_000;
  while (Date.now() < deadline) {
    const final = await readJson(ctx.store, runKeys.final(repoId, runName), FinalRecordSchema);
    if (final) return final;
    await new Promise((r) => setTimeout(r, 200));
  }
  return null;
}
