import { randomBytes } from 'node:crypto';
import { sha256 } from '../common/hash.js';
import { createRun, readJson, runKeys, settleRun, type ArtifactIndex, type RunRecord, type TagRecord } from '../common/runs.js';
import { enqueuedKey } from '../common/orphans.js';
import type { JobSpec } from '../common/spec/job-spec.js';
import type { Context } from './context.js';
import { followRun } from './follow.js';
import { userSshKey } from './ssh-key.js';
import { mayOpen, watchLinks, type Link } from './links.js';
import { reachFor } from './reach.js';
import { isServerProvider } from '../common/spec/schema.js';
import { rememberProfile } from './fleet.js';
import { ConflictError, UsageError, toError } from '../common/errors.js';
import type { Placement, Queue } from '../common/ports.js';
import { ArtifactIndexSchema, CacheEntrySchema, FinalRecordSchema, TagRecordSchema } from '../common/records/runs.js';

export interface SubmitInput {
  repoId: string;
  workflow: string;
  /** Builds the spec for the reserved run name and job id. */
  spec: (runName: string, jobId: string) => JobSpec;
  overrides: string[];
  tag?: string;
  /** Move the tag if it names another run (`run -t TAG --force`); otherwise a taken tag is refused. */
  forceTag?: boolean;
  restartOf?: string;
  /** Look up the rerun cache (workflows with `cache: true`, unless --no-cache). */
  useCache: boolean;
  /** Where the job runs: `ctx.compute.plan` of its resources, made before anything was stored. */
  placement: Placement;
  /** The values of the spec's `runSecrets`, stored in the secret store under the new run before its job is sent. */
  runSecrets?: Record<string, string>;
}

export interface Submitted {
  record: RunRecord;
  /** The earlier run whose outputs were reused, on a cache hit. */
  cacheOf?: string;
}

/**
 * Reserves a run name, records the run, and either settles it from the rerun cache or enqueues
 * its job and makes sure an agent will take it.
 */
export async function submitRun(ctx: Context, input: SubmitInput): Promise<Submitted> {
  const jobId = randomBytes(6).toString('hex');
  const { placement } = input;
  // Whatever can be done before the run exists is: the window in which a killed CLI leaves a run
  // recorded but never queued is then a few store writes and the send. The profile's queue exists
  // (`run` creates it for its own job) before the profile is remembered for reconciling.
  const queue = await ctx.queueFor(placement.profileId, { create: true });
  await rememberProfile(ctx, placement);
  const owner = await ctx.owner();
  // The names of the repo's secrets, not their values: the agent reads the values by name at job start.
  const secretNames = ctx.secrets ? await ctx.secrets.list({ repoId: input.repoId }) : [];
  // EC2 agents let only the submitter's key in (`dstack ssh`, port forwards); a restart carries the restarter's.
  const ec2 = ctx.config.backend === 'aws' && ctx.config.aws?.agents !== 'local';
  const sshKey = ec2 ? (await userSshKey(ctx.config.home)).publicKey : undefined;
  const record = await createRun(ctx.store, (runName) => {
    // A restart's spec names the secrets of its day: the current ones replace them.
    const { secretNames: _earlier, sshKey: _theirs, ...built } = input.spec(runName, jobId);
    const spec: JobSpec = { ...built, ...(secretNames.length > 0 ? { secretNames } : {}), ...(sshKey ? { sshKey } : {}) };
    if (spec.cache) spec.cacheKey = cacheKey(spec);
    return {
      runName,
      repoId: input.repoId,
      workflow: input.workflow,
      jobId,
      submittedAt: new Date().toISOString(),
      maxAttempts: ctx.config.local.maxAttempts,
      spec,
      overrides: input.overrides,
      toolVersion: ctx.toolVersion,
      placement,
      marksEnqueued: true,
      owner,
      ...(input.restartOf ? { restartOf: input.restartOf } : {}),
      ...(input.tag ? { tag: input.tag } : {}),
    };
  });
  const { repoId, runName, spec } = record;
  if (input.tag) await claimTag(ctx, record, input.tag, input.forceTag ?? false);
  const hit = input.useCache && spec.cacheKey ? await cachedRun(ctx, repoId, spec.cacheKey) : undefined;
  if (hit) {
    await ctx.store.put(runKeys.artifacts(repoId, runName), JSON.stringify(hit.artifacts, null, 2));
    await settleRun(ctx.store, repoId, runName, {
      status: 'done',
      exitCode: 0,
      reason: `cache hit: reused the outputs of run ${hit.runName}`,
      finishedAt: new Date().toISOString(),
      attempt: null,
      cacheOf: hit.runName,
    });
    return { record, cacheOf: hit.runName };
  }
  const pinned = Object.entries(input.runSecrets ?? {});
  if (pinned.length > 0) {
    if (!ctx.secrets) throw new UsageError('this backend has no secret store for the values of bare env names: use NAME=VALUE');
    for (const [name, value] of pinned) await ctx.secrets.put({ repoId, runName }, name, value);
  }
  const messageId = await queue.send(JSON.stringify(spec));
  await ctx.store.put(enqueuedKey(repoId, runName), JSON.stringify({ messageId, sentAt: new Date().toISOString() }));
  await ensureOwnCapacity(ctx, placement, queue);
  return { record };
}

/** Refuses a tag name that is not letters, digits, ".", "_" and "-" (`run -t` and `tags add`). */
export function checkTagName(tag: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(tag)) throw new UsageError(`tag \`${tag}\`: use letters, digits, ".", "_" and "-"`);
}

/** The one line `run -t` prints when the tag is taken. */
export function tagTaken(tag: string, runName: string): ConflictError {
  return new ConflictError(`tag \`${tag}\` already points to run ${runName}: pick another tag, or add --force to move it`);
}

/**
 * Points the tag at the new run: created exclusively, so of two concurrent `run -t same` only one
 * gets it. The loser's run is settled as failed before anything is enqueued, and the refusal thrown.
 */
async function claimTag(ctx: Context, record: RunRecord, tagName: string, force: boolean): Promise<void> {
  const { repoId, runName } = record;
  const tag: TagRecord = { tag: tagName, runName, createdAt: new Date().toISOString() };
  try {
    await ctx.store.put(runKeys.tag(repoId, tagName), JSON.stringify(tag, null, 2), { ifAbsent: !force });
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
    const holder = (await readJson(ctx.store, runKeys.tag(repoId, tagName), TagRecordSchema))?.runName ?? '?';
    await settleRun(ctx.store, repoId, runName, {
      status: 'failed',
      exitCode: null,
      reason: `not run: tag ${tagName} was taken by run ${holder}`,
      finishedAt: new Date().toISOString(),
      attempt: null,
    });
    throw tagTaken(tagName, holder);
  }
}

/**
 * Capacity for one profile's backlog: what `run` (and an attached run, every 2 s) needs for its own
 * job; the pass over every profile is `reconcile`. A failed launch is retried on the next pass, so
 * it is a warning here.
 */
async function ensureOwnCapacity(ctx: Context, placement: Placement, queue: Queue): Promise<void> {
  try {
    const counts = await queue.counts();
    await ctx.compute.ensureCapacity([{ placement, backlog: counts.visible + counts.inFlight }]);
  } catch (e) {
    ctx.out.note(`warning: ${toError(e).message}`);
  }
}

/**
 * The rerun cache key: the code snapshot, everything in the spec that affects what runs, and the
 * pinned deps (run names and manifest hashes). Names, ids and times are left out.
 */
export function cacheKey(spec: JobSpec): string {
  const { commit, diffSha256, untrackedSha256 } = spec.code;
  const { provider, commands, python, requirements, env, runSecrets, workingDir, artifacts, image, resources, portCount, pinnedDeps, fixedPorts, maxDurationS, idleDurationS } = spec;
  // `requirements`, `runSecrets` and the fields of spec version 4 are undefined (left out by JSON) unless set, so keys of runs without them are unchanged.
  // The values of `runSecrets` are not in the key: a secret is no input of the computation.
  return sha256(
    JSON.stringify({ commit, diffSha256, untrackedSha256, provider, commands, python, requirements, env, runSecrets, workingDir, artifacts, image, resources, portCount, pinnedDeps, fixedPorts, maxDurationS, idleDurationS }),
  );
}

async function cachedRun(ctx: Context, repoId: string, key: string): Promise<{ runName: string; artifacts: ArtifactIndex } | undefined> {
  const entry = await readJson(ctx.store, runKeys.cache(repoId, key), CacheEntrySchema);
  if (!entry) return undefined;
  const final = await readJson(ctx.store, runKeys.final(repoId, entry.runName), FinalRecordSchema);
  const artifacts = await readJson(ctx.store, runKeys.artifacts(repoId, entry.runName), ArtifactIndexSchema);
  if (final?.status !== 'done') return undefined;
  return { runName: entry.runName, artifacts: artifacts ?? { artifacts: [], savedAt: new Date().toISOString(), complete: true } };
}

/** Follows a submitted run to its end (attached), or says how to follow it (-d); returns the exit code. */
export async function attach(ctx: Context, submitted: Submitted, detach: boolean, waitForLink = true): Promise<number> {
  const { runName: name, workflow } = submitted.record;
  if (submitted.cacheOf) {
    ctx.out.line(`Run ${name} (workflow ${workflow}): cache hit, reused the outputs of run ${submitted.cacheOf}; no commands were run.`);
    return 0;
  }
  const spec = submitted.record.spec;
  const devEnv = isServerProvider(spec.provider);
  if (detach && (!devEnv || !waitForLink)) {
    ctx.out.line(`Run ${name} (workflow ${workflow}) submitted. Follow it with \`dstack logs ${name} -f\`.`);
    return 0;
  }
  if (detach) return waitForDevLink(ctx, submitted.record);
  ctx.out.note(`Run ${name} (workflow ${workflow}) submitted. To detach, press Ctrl+C.`);
  return follow(ctx, submitted.record, true);
}

/**
 * Streams the run's output until it ends or Ctrl-C, printing each link (a dev environment's, with its
 * token, and each port's) as soon as it answers. `dstack run` and `dstack attach` both end here.
 */
export async function follow(ctx: Context, record: RunRecord, reconcile: boolean): Promise<number> {
  const { runName: name, repoId } = record;
  const ended = deferred();
  const reach = await reachFor(ctx, record);
  const mine = await mayOpen(ctx.owner, record.owner).catch(() => false);
  if (!mine && isServerProvider(record.spec.provider)) ctx.out.note(`Run ${name} is ${record.owner ?? 'another user'}'s dev environment: its link is theirs and is not shown here.`);
  const links = watchLinks({
    store: ctx.store,
    secrets: mine ? ctx.secrets : undefined,
    repoId,
    runName: name,
    reach: reach.reach,
    onLink: (link) => ctx.out.line(linkLine(record, link)),
    stopped: Promise.race([ended.promise, ctx.interrupted]),
  });
  try {
    const { final, interrupted } = await followRun(ctx.store, repoId, name, {
      follow: true,
      pollMs: 20,
      onRecord: (r) => ctx.out.raw(r.s, r.d),
      ...(reconcile
        ? {
            onTick: async () => {
              const placement = record.placement;
              if (placement) await ensureOwnCapacity(ctx, placement, await ctx.queueFor(placement.profileId));
            },
          }
        : {}),
      stopped: ctx.interrupted,
    });
    if (interrupted || !final) {
      ctx.out.note(`\nDetached; the run goes on. Reattach with \`dstack attach ${name}\`, stop it with \`dstack stop ${name}\`.`);
      return 130;
    }
    if (final.status === 'done') return 0;
    ctx.out.note(`Run ${name} ${final.status}: ${final.reason ?? ''}`);
    return final.exitCode !== null && final.exitCode > 0 && final.exitCode < 256 ? final.exitCode : 1;
  } finally {
    ended.resolve();
    await links;
    await reach.close();
  }
}

/** `dstack run -d` of a dev environment: waits until its link answers, prints it, and leaves the run going. */
async function waitForDevLink(ctx: Context, record: RunRecord): Promise<number> {
  const { runName: name, workflow, repoId } = record;
  ctx.out.note(`Run ${name} (workflow ${workflow}) submitted; waiting for the dev environment to answer (Ctrl+C stops waiting, not the run).`);
  const got = deferred<Link | undefined>();
  const reach = await reachFor(ctx, record);
  const watch = watchLinks({
    store: ctx.store,
    secrets: ctx.secrets,
    repoId,
    runName: name,
    reach: reach.reach,
    onLink: (link) => {
      if (link.kind === 'server') got.resolve(link);
    },
    stopped: Promise.race([got.promise, ctx.interrupted]),
  });
  // The run may end before it is ready (a server that fails to start): its reason is the answer then.
  // Capacity is reconciled meanwhile, as when following: an agent that was draining when the job was sent is replaced.
  const finished = (async (): Promise<void> => {
    let lastTick = Date.now();
    // A store or queue error is tried again at the next tick, as the follow loop does: waiting never crashes the CLI.
    const ended = (): Promise<boolean> => ctx.store.get(runKeys.final(repoId, name)).then((b) => Boolean(b), () => false);
    while (!(await ended())) {
      if (await Promise.race([got.promise.then(() => true), ctx.interrupted.then(() => true), new Promise((r) => setTimeout(() => r(false), 250))])) return;
      if (record.placement && Date.now() - lastTick >= 2000) {
        lastTick = Date.now();
        const placement = record.placement;
        await ctx.queueFor(placement.profileId).then((q) => ensureOwnCapacity(ctx, placement, q)).catch(() => undefined);
      }
    }
    got.resolve(undefined);
  })();
  void ctx.interrupted.then(() => got.resolve(undefined));
  const link = await got.promise;
  await Promise.all([watch, finished]);
  await reach.close();
  if (link) {
    ctx.out.line(linkLine(record, link));
    if (reach.forwarded) ctx.out.note(`The link works while a forward runs: \`dstack attach ${name}\` opens it again.`);
    ctx.out.note(`Stop it with \`dstack stop ${name}\`; \`dstack attach ${name}\` follows its log.`);
    return 0;
  }
  const final = await readJson(ctx.store, runKeys.final(repoId, name), FinalRecordSchema);
  if (final) {
    ctx.out.note(`Run ${name} ${final.status} before its dev environment answered: ${final.reason ?? ''}. See \`dstack logs ${name}\`.`);
    return 1;
  }
  ctx.out.note(`Stopped waiting; the run goes on. \`dstack attach ${name}\` prints its link once it answers.`);
  return 130;
}

/** One line per link: `Dev environment: URL` or `Port 6006: URL`. */
export function linkLine(record: RunRecord, link: Link): string {
  if (link.kind === 'server') return `${record.spec.provider === 'code' ? 'VS Code' : record.spec.provider === 'lab' ? 'JupyterLab' : 'Jupyter Notebook'} of run ${record.runName} is ready: ${link.url}`;
  return `Port ${link.port} of run ${record.runName}: ${link.url}`;
}

function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
