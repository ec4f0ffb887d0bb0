import { randomBytes } from 'node:crypto';
import { SERVER_TOKEN } from '../../common/dev-tools.js';
import { UsageError } from '../../common/errors.js';
import { loadRun } from '../../common/runs.js';
import { isOthers } from '../../common/owner.js';
import { repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';
import { attach, submitRun } from '../submit.js';
import { refuseWhatThisMachineCannotRun } from '../capability.js';

export interface RestartOptions {
  run: string;
  /** With `detach`, a dev environment waits for its link and prints it (default); false returns at once. */
  waitForLink?: boolean;
  detach: boolean;
  /** Restart another owner's run even when it pins values from their shell. */
  force?: boolean;
}

/**
 * `dstack restart RUN`: the same code snapshot, resolved spec, overrides and pinned deps, under a
 * new name that points back to RUN. The workflow file and the deps' later runs play no part. Bare env
 * names get the values pinned to RUN; the repo's named secrets, their current values (the agent reads them).
 * Another owner's run that pins values from their shell is refused unless --force: those values are theirs.
 */
export async function restartCommand(ctx: Context, o: RestartOptions): Promise<number> {
  return (await restartRun(ctx, o)).code;
}

/** `dstack restart RUN` for a caller that goes on with the new run (the dashboard opens its page): the exit code and the new run's name. */
export async function restartRun(ctx: Context, o: RestartOptions): Promise<{ code: number; runName: string }> {
  const info = await repoInfo(ctx.cwd);
  const { record, attempts } = await loadRun(ctx.store, info.repoId, o.run);
  // A docker job runs again from the image it ran, by digest: a tag moved since then changes nothing.
  const image = attempts.map((a) => a.image).filter((i) => i !== undefined).pop();
  const pinned = record.spec.runSecrets ?? [];
  const fromShell = pinned.filter((name) => name !== SERVER_TOKEN);
  if (fromShell.length > 0 && record.owner !== undefined && !o.force) {
    const me = await ctx.owner();
    if (isOthers(record.owner, me)) {
      throw new UsageError(`run ${record.runName} belongs to ${record.owner} and pins values from their shell (${fromShell.join(', ')}): add --force to restart it with those values anyway`);
    }
  }
  await refuseWhatThisMachineCannotRun(ctx, `run ${record.runName}`, record.spec);
  const runSecrets: Record<string, string> = {};
  for (const name of pinned) {
    // A dev environment gets a fresh token: the old run's link must not open the new one.
    if (name === SERVER_TOKEN) {
      runSecrets[name] = randomBytes(24).toString('base64url');
      continue;
    }
    const value = ctx.secrets ? await ctx.secrets.get({ repoId: record.repoId, runName: record.runName }, name) : undefined;
    if (value === undefined) throw new UsageError(`the value of \`${name}\` pinned to run ${record.runName} is gone: run the workflow again`);
    runSecrets[name] = value;
  }
  const submitted = await submitRun(ctx, {
    runSecrets,
    repoId: record.repoId,
    workflow: record.workflow,
    spec: (runName, jobId) => {
      const { cacheKey: _unused, ...spec } = record.spec;
      return { ...spec, ...(image ? { image: image.pinned } : {}), runName, jobId, submittedAt: new Date().toISOString() };
    },
    overrides: record.overrides,
    restartOf: record.runName,
    useCache: false,
    placement: await ctx.compute.plan(record.spec.resources),
  });
  if (!o.detach) ctx.out.note(`Restarting ${record.runName} as ${submitted.record.runName}.`);
  return { code: await attach(ctx, submitted, o.detach, o.waitForLink ?? true), runName: submitted.record.runName };
}
