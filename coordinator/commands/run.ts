import { randomBytes } from 'node:crypto';
import { NotFoundError } from '../../common/errors.js';
import { createRun, type RunRecord } from '../../common/runs.js';
import { loadWorkflows } from '../../common/spec/load.js';
import { buildJobSpec } from '../../common/spec/job-spec.js';
import { nameStem } from '../../common/names.js';
import { captureCode, repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';
import { followRun } from '../follow.js';

export interface RunOptions {
  workflow: string;
  args: string[];
  detach: boolean;
  dryRun: boolean;
}

/** `dstack run`: capture the code, build the job spec, enqueue it, make sure an agent runs, follow. */
export async function runCommand(ctx: Context, o: RunOptions): Promise<number> {
  const info = await repoInfo(ctx.cwd);
  const workflows = await loadWorkflows(info.root);
  const located = workflows.get(o.workflow);
  if (!located) {
    const names = [...workflows.keys()].sort().join(', ');
    throw new NotFoundError(`workflow \`${o.workflow}\` is not defined in .dstack/workflows.yaml or .dstack/workflows/*.yaml; defined: ${names}`);
  }
  const jobId = randomBytes(6).toString('hex');
  const build = (runName: string, code: RunRecord['spec']['code']): RunRecord['spec'] =>
    buildJobSpec({ located, repoId: info.repoId, runName, jobId, args: o.args, shellEnv: ctx.shellEnv, code, now: new Date() });

  if (o.dryRun) {
    const code = await captureCode(info, null);
    ctx.out.json(build(`${nameStem()}-1`, code));
    return 0;
  }
  const code = await captureCode(info, ctx.store);
  const record = await createRun(ctx.store, (runName) => ({
    runName,
    repoId: info.repoId,
    workflow: located.workflow.name,
    jobId,
    submittedAt: new Date().toISOString(),
    maxAttempts: ctx.config.local.maxAttempts,
    spec: build(runName, code),
  }));
  await ctx.queue.send(JSON.stringify(record.spec));
  await reconcile(ctx);
  const name = record.runName;
  if (o.detach) {
    ctx.out.line(`Run ${name} (workflow ${record.workflow}) submitted. Follow it with \`dstack logs ${name} -f\`.`);
    return 0;
  }
  ctx.out.note(`Run ${name} (workflow ${record.workflow}) submitted. To detach, press Ctrl+C.`);
  const { final, interrupted } = await followRun(ctx.store, info.repoId, name, {
    follow: true,
    pollMs: 20,
    onRecord: (r) => ctx.out.raw(r.s, r.d),
    onTick: () => reconcile(ctx),
    stopped: ctx.interrupted,
  });
  if (interrupted || !final) {
    ctx.out.note(`\nDetached; the run goes on. Reattach with \`dstack logs ${name} -f\`, stop it with \`dstack stop ${name}\`.`);
    return 130;
  }
  if (final.status === 'done') return 0;
  ctx.out.note(`Run ${name} ${final.status}: ${final.reason ?? ''}`);
  return final.exitCode !== null && final.exitCode > 0 && final.exitCode < 256 ? final.exitCode : 1;
}

/** Starts agents for the queued and running jobs, up to the configured limit. */
export async function reconcile(ctx: Context): Promise<void> {
  const counts = await ctx.queue.counts();
  await ctx.compute.ensureCapacity(counts.visible + counts.inFlight);
}

