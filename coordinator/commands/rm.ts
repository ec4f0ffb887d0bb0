import { UsageError } from '../../common/errors.js';
import { indexKeysOf } from '../../common/run-index.js';
import { isFinished, listRuns, loadRun, runKeys, type RunRecord } from '../../common/runs.js';
import { repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';

export interface RmOptions {
  run: string | undefined;
  all: boolean;
  yes: boolean;
}

/** `dstack rm (RUN | -a) [-y]`: deletes finished runs, their records and logs. */
export async function rmCommand(ctx: Context, o: RmOptions): Promise<number> {
  if (!o.run && !o.all) throw new UsageError('name a run or use --all: dstack rm (RUN | -a) [-y]');
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
  const what = o.run ? `the run ${o.run}` : `${targets.length} finished run(s)`;
  if (!(await ctx.confirm(`Delete ${what}?`, o.yes))) return 1;
  const repoId = info.repoId;
  for (const run of targets) {
    const { runName } = run;
    const objects = await ctx.store.list(runKeys.prefix(repoId, runName));
    // The index keys and the record go last, so an interrupted rm leaves a run that can be removed again.
    const record = runKeys.record(repoId, runName);
    await ctx.store.delete(objects.map((x) => x.key).filter((k) => k !== record));
    await ctx.store.delete([...(await indexKeysOf(ctx.store, repoId, run)), record]);
    ctx.out.line(`Deleted ${runName}.`);
  }
  return 0;
}
