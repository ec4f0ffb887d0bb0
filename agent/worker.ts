import type { SecretStore } from '../common/secrets.js';
import { mkdir } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ConflictError, toError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Queue, QueueMessage, Store } from '../common/ports.js';
import { KNOWN_SPEC_VERSIONS, parseJobSpec } from '../common/records/job-spec.js';
import { AttemptRecordSchema, StopRequestSchema } from '../common/records/runs.js';
import { readJson, runKeys, settleRun, type AttemptRecord, type FinalRecord, type HostFacts, type InstanceFacts } from '../common/runs.js';
import { readEndedFacts, type EndedFacts } from '../common/run-cost.js';
import type { JobSpec } from '../common/spec/job-spec.js';
import { Attempt, finalRecord } from './attempt.js';
import { Lease, type Clock } from './lease.js';
import type { Sandbox } from './sandbox.js';
import type { JobUser } from './job-user.js';
import type { SshWiring } from './ssh-wiring.js';
import type { DockerClient } from './runtime/docker.js';
import type { GpuPool } from './gpus.js';

export interface AgentOptions {
  queue: Queue;
  store: Store;
  log: Logger;
  agentId: string;
  host: string;
  /** Where job directories are made. */
  workRoot: string;
  /**
   * The venvs made for `requirements`, reused across jobs (and by every agent given the same
   * folder); `<workRoot>/venvs` when not set. Not under the work folders the collector sweeps.
   */
  venvRoot?: string;
  /** The Conda envs made for `python: X.Y` (see python-find.ts), shared like `venvRoot`; none are made when not set. */
  condaRoot?: string;
  visibilityMs: number;
  /** How often the lease is renewed; well under `visibilityMs`. */
  heartbeatMs: number;
  /** How often a running job checks for a stop request. */
  tickMs: number;
  stopGraceMs: number;
  /** The agent returns from `run()` after this long without a job. */
  idleTimeoutMs: number;
  maxAttempts: number;
  /** The environment jobs start from: only its base variables are used (see environment.ts). */
  jobEnv: NodeJS.ProcessEnv;
  /** Where the jobs' secrets are read from; none: jobs get no secrets. */
  secrets?: SecretStore;
  /** Jobs run under bwrap when set (`local.sandbox`). */
  sandbox?: Sandbox;
  /** `local.codeServer`, for `provider: code`. */
  codeServer?: string;
  /** Jobs run as this user when set (DSTACK_JOB_USER, on the agent image): see job-user.ts. */
  jobUser?: JobUser;
  /** How often `mount: true` artifacts are saved while a job runs. */
  artifactSyncMs: number;
  hostFacts: HostFacts;
  /** The EC2 instance this agent runs on (from IMDS), recorded with every attempt. */
  instance?: InstanceFacts;
  onState?: (state: 'idle' | 'busy') => Promise<void>;
  /** The SSH endpoint of an EC2 agent: told when a job is set up and when it ends (see ssh-wiring.ts). */
  ssh?: SshWiring;
  /** The docker CLI, for `provider: docker` (see runtime/docker.ts). */
  docker?: DockerClient;
  /** This machine's GPUs, shared with its other agents; none: a job that asks for GPUs fails. */
  gpuPool?: GpuPool;
  /** The lease's clock; tests pass a fake one. */
  clock?: Clock;
}

/** How one delivery ended, as far as the queue is concerned. */
type Outcome = 'settled' | 'lease-lost' | 'released' | 'parked';

type ParsedMessage =
  | { kind: 'spec'; spec: JobSpec }
  | { kind: 'unknown-version'; version: unknown; runName: unknown }
  | { kind: 'not-a-spec'; problem: string; repoId?: string; runName?: string };

/**
 * Reads a queue message as a job spec. The version is checked before anything else is trusted: a
 * spec from a newer CLI may mean something this agent would run half understood. A spec of a known
 * version is then parsed with its schema (common/records/job-spec.ts), never cast.
 */
export function parseJobMessage(body: string): ParsedMessage {
  let data: unknown;
  try {
    data = JSON.parse(body);
  } catch {
    return { kind: 'not-a-spec', problem: 'not JSON' };
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return { kind: 'not-a-spec', problem: 'not an object' };
  const d = data as Record<string, unknown>;
  if (!('specVersion' in d) && !('runName' in d)) return { kind: 'not-a-spec', problem: 'no specVersion or runName' };
  if (typeof d.specVersion !== 'number' || !KNOWN_SPEC_VERSIONS.has(d.specVersion)) {
    return { kind: 'unknown-version', version: d.specVersion, runName: d.runName };
  }
  const parsed = parseJobSpec(d);
  if ('spec' in parsed) return { kind: 'spec', spec: parsed.spec };
  // Named well enough to settle: its run gets a final status with the reason instead of staying Submitted.
  const run = isKeyPart(d.repoId) && isKeyPart(d.runName) ? { repoId: d.repoId, runName: d.runName } : {};
  return { kind: 'not-a-spec', problem: parsed.problems, ...run };
}

/** A name that can go into a store key as it is: no empty, `.` or `..` segment, no odd characters. */
function isKeyPart(v: unknown): v is string {
  return typeof v === 'string' && /^[A-Za-z0-9._@:/-]{1,300}$/.test(v) && v.split('/').every((p) => p !== '' && p !== '.' && p !== '..');
}

/**
 * The agent loop: receive a job, check it is runnable here (parked? dead-lettered? stopped?), hold
 * it under a Lease while one Attempt runs it, settle the one final status, ack. A job's failure is
 * not the agent's, and the agent's is not the job's.
 */
export class Agent {
  private draining = false;
  private forced = false;
  /** Aborts a receive under way only when forced: an aborted long poll may still take a message on the server. */
  private readonly forceWake = new AbortController();
  private current: Attempt | undefined;
  private interruption: string | undefined;

  constructor(private readonly o: AgentOptions) {}

  /** First SIGTERM: take no new jobs, let the current one finish; a message that arrives meanwhile is released. */
  drain(): void {
    this.draining = true;
  }

  /** Second SIGTERM: stop the current job now and hand it back to the queue. */
  force(): void {
    this.drain();
    this.forced = true;
    this.forceWake.abort();
    this.current?.force();
  }

  /**
   * A spot interruption notice: stop the current job now (SIGTERM, then SIGKILL after the grace),
   * keep what it saved as this attempt's checkpoint, and hand the job back to the queue at once so
   * that an idle agent resumes it; take no new jobs.
   */
  interrupt(reason: string): void {
    this.interruption ??= reason;
    this.force();
  }

  async run(): Promise<void> {
    let idleSince = Date.now();
    this.o.log.log('info', 'agent started');
    while (!this.draining) {
      const left = this.o.idleTimeoutMs - (Date.now() - idleSince);
      if (left <= 0) {
        this.o.log.log('info', 'idle timeout: exiting', { idleMs: this.o.idleTimeoutMs });
        break;
      }
      let msg: QueueMessage | undefined;
      try {
        // Draining does not cut the long poll short: SQS would still hand the next message to the
        // closed request, and it would stay hidden for a whole lease. The poll ends within its wait.
        msg = await this.o.queue.receive({ waitMs: Math.min(left, 20_000), visibilityMs: this.o.visibilityMs, signal: this.forceWake.signal });
      } catch (e) {
        this.o.log.log('error', 'receive failed', { error: toError(e).message });
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (!msg) continue;
      if (this.draining) {
        this.o.log.log('info', 'draining: releasing a job received while stopping', { messageId: msg.id });
        await this.o.queue.release(msg.receipt).catch((e: unknown) => this.o.log.log('warn', 'release failed', { error: toError(e).message }));
        break;
      }
      await this.o.onState?.('busy');
      try {
        await this.handle(msg);
      } catch (e) {
        this.o.log.log('error', 'job handling failed', { error: toError(e).message });
      }
      await this.o.onState?.('idle');
      idleSince = Date.now();
    }
    this.o.log.log('info', 'agent stopped');
  }

  /** What the ended index key says about the run besides its status (best effort: see readEndedFacts). */
  private factsOf(repoId: string, runName: string, final: FinalRecord, current?: AttemptRecord): Promise<EndedFacts> {
    return readEndedFacts(this.o.store, { record: runKeys.record(repoId, runName), attempts: runKeys.attempts(repoId, runName) }, final, current);
  }

  private async handle(msg: QueueMessage): Promise<void> {
    const parsed = parseJobMessage(msg.body);
    if (parsed.kind === 'not-a-spec') {
      this.o.log.log('error', 'dropping a message that is not a job spec', { messageId: msg.id, problem: parsed.problem });
      if (parsed.repoId !== undefined && parsed.runName !== undefined) {
        const reason = `the job spec could not be read by this agent (${parsed.problem}): upgrade dstack and run it again`;
        await settleRun(this.o.store, parsed.repoId, parsed.runName, finalRecord('failed', null, reason, null));
      }
      await this.o.queue.ack(msg.receipt);
      return;
    }
    if (parsed.kind === 'unknown-version') {
      // Left for an agent that knows the version; after the queue's receive limit it is dead-lettered.
      this.o.log.log('error', `job spec version ${String(parsed.version)} is not known to this agent: releasing the job, not running it; upgrade the agent`, {
        messageId: msg.id,
        ...(typeof parsed.runName === 'string' ? { runName: parsed.runName } : {}),
      });
      await this.o.queue.release(msg.receipt, this.o.visibilityMs);
      return;
    }
    const { spec } = parsed;
    const { repoId, runName } = spec;
    let log = this.o.log.child({ runName, jobId: spec.jobId });
    if (await this.o.store.get(runKeys.final(repoId, runName))) {
      log.log('info', 'job already finished: dropping the redelivered message');
      await this.o.queue.ack(msg.receipt);
      return;
    }
    // Never run a job twice at once: if another agent still heartbeats it (a redelivery after a
    // lapsed lease, or a copy handed over at the queue's visibility cap), park the message and move on.
    const previous = await this.o.store.list(runKeys.attempts(repoId, runName));
    const holder = await this.liveHolder(previous.map((p) => p.key));
    if (holder) {
      log.log('info', 'job is held by a live agent: parking the message', { holder: holder.agentId });
      await this.o.queue.defer(msg.receipt, holder.leaseMs);
      return;
    }
    // Attempts are counted in the Store, not by the queue: parking a message resets its receive count.
    const attempt = previous.length + 1;
    log = log.child({ attempt: `${attempt} of ${this.o.maxAttempts}` });
    if (attempt > this.o.maxAttempts) {
      const reason = `gave up after ${this.o.maxAttempts} attempts: the agents running it stopped without finishing (killed, out of memory, or the machine went away)`;
      const final = finalRecord('failed', null, reason, previous.length);
      await settleRun(this.o.store, repoId, runName, final, await this.factsOf(repoId, runName, final));
      log.log('error', 'job failed: too many attempts; moving it to the dead-letter queue');
      await this.o.queue.deadLetter(msg.receipt);
      return;
    }
    if (await readJson(this.o.store, runKeys.stop(repoId, runName), StopRequestSchema)) {
      const final = finalRecord('stopped', null, 'stopped before it started', attempt);
      await settleRun(this.o.store, repoId, runName, final, await this.factsOf(repoId, runName, final));
      await this.o.queue.ack(msg.receipt);
      return;
    }
    const started = Date.now();
    log.log('info', 'job started');
    const outcome = await this.runJob(spec, msg, attempt, log);
    log.log('info', 'job ended', { outcome, durationMs: Date.now() - started });
  }

  /** How long the run's earlier attempts ran (start to end, or to their last heartbeat): what `max_duration` counts before this one. */
  private async ranBefore(spec: JobSpec, attempt: number): Promise<number> {
    let total = 0;
    for (let n = 1; n < attempt; n++) {
      const a = await readJson(this.o.store, runKeys.attempt(spec.repoId, spec.runName, n), AttemptRecordSchema).catch(() => null);
      if (a) total += Math.max(0, Date.parse(a.endedAt ?? a.heartbeatAt) - Date.parse(a.startedAt));
    }
    return total;
  }

  /** The attempt of another agent whose heartbeat is still fresh, if any. */
  private async liveHolder(attemptKeys: string[]): Promise<AttemptRecord | undefined> {
    const last = attemptKeys[attemptKeys.length - 1];
    if (!last) return undefined;
    const a = await readJson(this.o.store, last, AttemptRecordSchema);
    if (!a || a.state !== 'running' || a.agentId === this.o.agentId) return undefined;
    return Date.now() - Date.parse(a.heartbeatAt) < a.leaseMs ? a : undefined;
  }

  /** Runs one attempt under a lease, then settles and acks, releases, or (lease lost) leaves the message alone. */
  private async runJob(spec: JobSpec, msg: QueueMessage, attempt: number, log: Logger): Promise<Outcome> {
    const { store, queue } = this.o;
    const { repoId, runName } = spec;
    const now = (): string => new Date().toISOString();
    const record: AttemptRecord = {
      attempt,
      agentId: this.o.agentId,
      host: this.o.host,
      startedAt: now(),
      heartbeatAt: now(),
      leaseMs: this.o.visibilityMs,
      state: 'running',
      hostFacts: this.o.hostFacts,
      ...(this.o.instance ? { instance: this.o.instance } : {}),
    };
    const attemptKey = runKeys.attempt(repoId, runName, attempt);
    // Created exclusively: two agents can never both run attempt N.
    try {
      await store.put(attemptKey, JSON.stringify(record), { ifAbsent: true });
    } catch (e) {
      if (e instanceof ConflictError) {
        log.log('warn', 'another agent took this attempt first: parking the message');
        await queue.defer(msg.receipt, this.o.visibilityMs);
        return 'parked';
      }
      throw e;
    }
    // Settled meanwhile (stopped before it started, or settled as an orphan): never run a settled run.
    if (await store.get(runKeys.final(repoId, runName))) {
      log.log('info', 'the run was settled before this attempt began: not running it');
      record.state = 'ended';
      record.endedAt = now();
      await store.put(attemptKey, JSON.stringify(record));
      await queue.ack(msg.receipt);
      return 'settled';
    }

    // The heartbeat and the service record write the same object: one write at a time, each serialized
    // when it starts, so a slow heartbeat never lands after (and undoes) a newer service record.
    let writes: Promise<unknown> = Promise.resolve();
    const writeRecord = (): Promise<void> => {
      const next = writes.catch(() => undefined).then(() => store.put(attemptKey, JSON.stringify(record)));
      writes = next;
      return next;
    };
    const jobName = `${runName}-${attempt}-${randomBytes(3).toString('hex')}`;
    const jobDir = join(this.o.workRoot, jobName);
    // The lease writes its deadline here; the job's watchdog reads it (see job-process.ts).
    const deadlineFile = join(this.o.workRoot, `${jobName}.deadline`);
    await mkdir(this.o.workRoot, { recursive: true });
    const lease = new Lease({
      queue,
      receipt: msg.receipt,
      visibilityMs: this.o.visibilityMs,
      heartbeatMs: this.o.heartbeatMs,
      writeHeartbeat: async () => {
        record.heartbeatAt = now();
        await writeRecord();
      },
      deadlineFile,
      log,
      ...(this.o.clock ? { clock: this.o.clock } : {}),
    });
    const ranBeforeMs = spec.maxDurationS !== undefined && attempt > 1 ? await this.ranBefore(spec, attempt) : 0;
    let ssh: ReturnType<NonNullable<AgentOptions['ssh']>['jobStarted']>;
    // The GPUs a job gets go into its attempt record: which cards a run used.
    const gpuPool =
      this.o.gpuPool &&
      recordingGrants(this.o.gpuPool, (indices) => {
        record.gpus = indices;
        writeRecord().catch((e: unknown) => log.log('warn', 'could not record the job\'s GPUs', { error: toError(e).message }));
      });
    const run = new Attempt({
      store,
      spec,
      attempt,
      ranBeforeMs,
      jobDir,
      jobEnv: this.o.jobEnv,
      ...(this.o.secrets ? { secrets: this.o.secrets } : {}),
      venvRoot: this.o.venvRoot ?? join(this.o.workRoot, 'venvs'),
      ...(this.o.condaRoot !== undefined ? { condaRoot: this.o.condaRoot } : {}),
      stopGraceMs: this.o.stopGraceMs,
      tickMs: this.o.tickMs,
      artifactSyncMs: this.o.artifactSyncMs,
      signal: lease.signal,
      deadlineFile,
      ...(this.o.sandbox ? { sandbox: this.o.sandbox } : {}),
      ...(this.o.jobUser ? { jobUser: this.o.jobUser } : {}),
      ...(this.o.codeServer !== undefined ? { codeServer: this.o.codeServer } : {}),
      ...(this.o.docker ? { docker: this.o.docker } : {}),
      agentId: this.o.agentId,
      host: this.o.host,
      onImage: (image) => {
        // The digest is what `restart` runs: a tag that moves later does not change it.
        record.image = image;
        writeRecord().catch((e: unknown) => log.log('warn', 'could not record the job\'s image', { error: toError(e).message }));
      },
      ...(gpuPool ? { gpuPool } : {}),
      onService: (info) => {
        // Published at once, not at the next heartbeat: the CLI waits on it to print the link.
        // The SSH endpoint stays published while the job runs, whatever it serves.
        if (info || ssh) record.service = { ports: [], ...info, ...(ssh ? { ssh } : {}) };
        else delete record.service;
        writeRecord().catch((e: unknown) => log.log('warn', 'could not publish the service record', { error: toError(e).message }));
      },
      onJobStarted: (job) => {
        // Where `dstack ssh` opens its shell; on EC2, the SSH endpoint now lets the submitter in.
        record.cwd = job.cwd;
        ssh = this.o.ssh?.jobStarted(spec, job);
        if (ssh) record.service = { ports: [], ...record.service, ssh };
        writeRecord().catch((e: unknown) => log.log('warn', 'could not publish the job\'s folder', { error: toError(e).message }));
      },
      log,
    });
    let result;
    try {
      await lease.start();
      this.current = run;
      if (this.forced) run.force();
      result = await run.run();
      // A holder that lapsed (frozen, partitioned) while the job ran must not settle it: prove it first.
      if (result.outcome !== 'abandoned' && !(await lease.confirm())) result = { outcome: 'abandoned' as const };
    } finally {
      this.current = undefined;
      this.o.ssh?.jobEnded();
      await lease.stop();
    }
    if (result.outcome === 'abandoned') return 'lease-lost';
    record.state = 'ended';
    record.endedAt = now();
    delete record.service;
    if (result.outcome === 'handed-back') {
      record.interruption = this.interruption ?? result.reason;
      await writeRecord().catch(() => undefined);
      // Forced off: an idle agent resumes it at once. An infrastructure failure waits a little, longer each attempt.
      const delayMs = this.forced ? 0 : Math.min(this.o.visibilityMs, 1000 * 2 ** (attempt - 1));
      log.log('warn', 'job handed back to the queue', { reason: record.interruption, delayMs });
      await queue.release(msg.receipt, delayMs).catch((e: unknown) => log.log('warn', 'release failed', { error: toError(e).message }));
      return 'released';
    }
    // Duration, instance and cost go into the index key, so that listings need not read this run again.
    const facts = await this.factsOf(repoId, runName, result.final, record);
    const settled = await retry(() => settleRun(store, repoId, runName, result.final, facts), 5, 500);
    await writeRecord().catch((e: unknown) => log.log('warn', 'could not mark the attempt ended', { error: toError(e).message }));
    if (settled.status === 'done' && settled === result.final && spec.cacheKey) {
      await store.put(runKeys.cache(repoId, spec.cacheKey), JSON.stringify({ runName })).catch(() => undefined);
    }
    log.log('info', `job ${settled.status}`, { exitCode: settled.exitCode, reason: settled.reason });
    await queue.ack(msg.receipt).catch((e: unknown) => log.log('warn', 'ack failed', { error: toError(e).message }));
    return 'settled';
  }
}

/** Retries `fn` a few times, `delayMs` apart: the final status is worth a short wait (a disk that a failed save just freed). */
async function retry<T>(fn: () => Promise<T>, tries: number, delayMs: number): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= tries) throw e;
      await new Promise((r) => setTimeout(r, delayMs));
    }
  }
}

/** The pool, telling `onGrant` the GPUs each grant holds. */
function recordingGrants(pool: GpuPool, onGrant: (indices: number[]) => void): GpuPool {
  return {
    acquire: async (...args) => {
      const grant = await pool.acquire(...args);
      onGrant(grant.indices);
      return grant;
    },
  };
}
