import { NotFoundError, UsageError } from '../../common/errors.js';
import { RUNNABLE_PROVIDERS } from '../../common/spec/schema.js';
import { nameStem } from '../../common/names.js';
import { TagRecordSchema } from '../../common/records/runs.js';
import { readJson, runKeys } from '../../common/runs.js';
import { loadWorkflows } from '../../common/spec/load.js';
import { buildJobSpec } from '../../common/spec/job-spec.js';
import { captureCode, repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';
import { resolveDeps, tryResolveDeps } from '../deps.js';
import { applyOverrides, type Overrides } from '../overrides.js';
import { attach, checkTagName, submitRun, tagTaken } from '../submit.js';
import { formatBytes, formatTable } from '../output.js';
import { didYouMean } from '../workflow-names.js';
import { bareEnvNames, pinBareEnv, withServerToken } from '../run-secrets.js';
import { randomBytes } from 'node:crypto';
import { isServerProvider } from '../../common/spec/schema.js';
import { refuseWhatThisMachineCannotRun } from '../capability.js';

const formatMiB = (mib: number): string => formatBytes(mib * 2 ** 20);

export interface RunOptions {
  workflow: string;
  args: string[];
  detach: boolean;
  dryRun: boolean;
  tag: string | undefined;
  /** `--force`: let `-t TAG` move a tag that points to another run. */
  force?: boolean;
  useCache: boolean;
  overrides: Overrides;
  /** The override flags as typed, kept in the run record. */
  overrideArgv: string[];
  /** With `detach`, a dev environment's run waits for its link and prints it (default); false returns at once. */
  waitForLink?: boolean;
}

/** `dstack run`: capture the code, build the spec, pin the deps, then submit (or reuse a cached run) and follow. */
export async function runCommand(ctx: Context, o: RunOptions): Promise<number> {
  const info = await repoInfo(ctx.cwd);
  const workflows = await loadWorkflows(info.root);
  const located = workflows.get(o.workflow);
  if (!located) {
    const names = [...workflows.keys()].sort().join(', ');
    const close = didYouMean(o.workflow, workflows.keys());
    const known = close === undefined ? `defined: ${names}` : `did you mean \`${close}\`? (defined: ${names})`;
    throw new NotFoundError(`workflow \`${o.workflow}\` is not defined in .dstack/workflows.yaml or .dstack/workflows/*.yaml; ${known}`);
  }
  // Everything that can fail on bad input is checked before anything is stored.
  // Bare env names take the shell's value, which is pinned to the run in the secret store, never kept
  // in the spec: a run that needs one cannot be submitted where there is no store.
  const bare = bareEnvNames(located.workflow.env, o.overrides.env);
  const { provider } = located.workflow;
  if (!o.dryRun && !RUNNABLE_PROVIDERS.includes(provider)) {
    // Refused before anything is stored: an agent could only fail it, leaving a failed run behind.
    throw new UsageError(
      `${located.file}:${located.line}: workflow \`${o.workflow}\` has \`provider: ${provider}\`, which this version of dstack cannot run yet (it runs ${RUNNABLE_PROVIDERS.slice(0, -1).join(', ')} and ${RUNNABLE_PROVIDERS.at(-1) ?? ''}): \`dstack run ${o.workflow} --dry-run\` shows its job spec`,
    );
  }
  // A dev environment's token: a fresh random value per run, kept in the secret store like a bare env value.
  const token = isServerProvider(provider) && !o.dryRun ? randomBytes(24).toString('base64url') : undefined;
  const pinned = (runName: string, jobId: string, code: Parameters<typeof buildJobSpec>[0]['code']) =>
    withServerToken(
      pinBareEnv(
        applyOverrides(buildJobSpec({ located, repoId: info.repoId, runName, jobId, args: o.args, shellEnv: ctx.shellEnv, code, now: new Date() }), o.overrides, ctx.shellEnv),
        bare,
      ),
      token,
    );
  const base = (runName: string, jobId: string, code: Parameters<typeof buildJobSpec>[0]['code']) => pinned(runName, jobId, code).spec;
  const captured = await captureCode(info, { untrackedWarnBytes: ctx.config.local.untrackedWarnBytes, warn: (line) => ctx.out.note(line) });
  const probe = base('x-y-1', 'x', captured.ref);
  if (o.dryRun) {
    // A dry run shows what it can: deps that cannot be pinned yet are listed, not fatal.
    const { pinned, unresolved } = await tryResolveDeps(ctx.store, info.repoId, probe.deps);
    const placement = await ctx.compute.plan(probe.resources);
    ctx.out.json({ ...probe, runName: `${nameStem()}-1`, jobId: '(assigned on submit)', pinnedDeps: pinned, unresolvedDeps: unresolved, placement });
    for (const reason of unresolved) ctx.out.note(`warning: ${reason}`);
    if (placement.offers.length > 0) {
      ctx.out.note(`Candidate instance types (${placement.offers[0]?.market ?? ''}, cheapest first; profile ${placement.profileId}):`);
      const table = formatTable(
        ['TYPE', 'CPUS', 'MEMORY', 'GPU', 'PRICE/H'],
        placement.offers.map((x) => [
          x.instanceType,
          String(x.vcpus),
          formatMiB(x.memoryMiB),
          x.gpu ? `${x.gpu.count}×${x.gpu.name} ${formatMiB(x.gpu.memoryMiB)}` : '-',
          `$${x.pricePerHour.toFixed(4)}`,
        ]),
      );
      ctx.out.note(table.trimEnd());
    }
    return 0;
  }
  if (o.tag) await checkTag(ctx, info.repoId, o.tag, o.force ?? false);
  if (token !== undefined && !ctx.secrets) {
    throw new UsageError(`workflow \`${o.workflow}\` is a dev environment, whose token is kept in the secret store, and this backend has none`);
  }
  if (bare.size > 0 && !ctx.secrets) {
    throw new UsageError(`env ${[...bare].join(', ')} of workflow \`${o.workflow}\`: a bare env name is kept as a secret of the run, and this backend has no secret store; give a value (\`NAME=value\`) instead`);
  }
  const pinnedDeps = await resolveDeps(ctx.store, info.repoId, probe.deps);
  // An impossible resource request (or a missing agent image) is refused before the code is uploaded.
  const placement = await ctx.compute.plan(probe.resources);
  await refuseWhatThisMachineCannotRun(ctx, `${located.file}:${located.line}`, probe);
  await captured.upload(ctx.store);
  const code = captured.ref;
  const submitted = await submitRun(ctx, {
    repoId: info.repoId,
    workflow: located.workflow.name,
    spec: (runName, jobId) => ({ ...base(runName, jobId, code), pinnedDeps }),
    overrides: o.overrideArgv,
    ...(o.tag ? { tag: o.tag, forceTag: o.force ?? false } : {}),
    useCache: o.useCache,
    placement,
    runSecrets: pinned('x-y-1', 'x', code).values,
  });
  return attach(ctx, submitted, o.detach, o.waitForLink ?? true);
}

/**
 * `-t TAG` is refused before anything is stored when the tag already names a run, unless `--force`.
 * This is the early, friendly check; the claim itself is the create-if-absent write in submitRun.
 */
async function checkTag(ctx: Context, repoId: string, tag: string, force: boolean): Promise<void> {
  checkTagName(tag);
  const existing = await readJson(ctx.store, runKeys.tag(repoId, tag), TagRecordSchema);
  if (existing && !force) throw tagTaken(tag, existing.runName);
}
