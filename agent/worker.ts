import { rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ConflictError, JobFailedError, LeaseLostError, toError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Queue, QueueMessage, Store } from '../common/ports.js';
import { readJson, runKeys, settleRun, type AttemptRecord, type FinalRecord, type HostFacts, type InstanceFacts, type StopRequest } from '../common/runs.js';
import { ArtifactSaver, restoreCheckpoint, restoreDeps } from './artifacts.js';
import type { JobSpec } from '../common/spec/job-spec.js';
import { startJob, type JobExit, type JobProcess } from './job-process.js';
import { LogShipper } from './log-shipper.js';
import { prepareRun } from './providers.js';
import { rebuildCode } from './workspace.js';
import { AttemptRecordSchema, StopRequestSchema } from '../common/records/runs.js';

export interface AgentOptions {
  queue: Queue;
  store: Store;
  log: Logger;
  agentId: string;
  host: string;
  /** Where job directories are made. */
  workRoot: string;
  visibilityMs: number;
  /** How often the lease is renewed; well under `visibilityMs`. */
  heartbeatMs: number;
  /** How often a running job checks for a stop request. */
  tickMs: number;
  stopGraceMs: number;
  /** The agent returns from `run()` after this long without a job. */
  idleTimeoutMs: number;
  maxAttempts: number;
  /** The environment jobs start from. */
  jobEnv: NodeJS.ProcessEnv;
  /** How often `mount: true` artifacts are saved while a job runs. */
  artifactSyncMs: number;
  hostFacts: HostFacts;
  /** The EC2 instance this agent runs on (from IMDS), recorded with every attempt. */
  instance?: InstanceFacts;
  onState?: (state: 'idle' | 'busy') => Promise<void>;
}

/** How one delivery ended, as far as the queue is concerned. */
type Outcome = 'settled' | 'lease-lost' | 'released' | 'parked';

/**
 * The agent loop: receive a job, hold its lease with a heartbeat, rebuild the code, run the
 * provider, ship logs, settle the one final status, ack. A job's failure is not the agent's.
 */
export class Agent {
  private draining = false;
  private forced = false;
  private readonly wake = new AbortController();
  private current: JobProcess | undefined;
  private interruption: string | undefined;

  constructor(private readonly o: AgentOptions) {}

  /** First SIGTERM: take no new jobs, let the current one finish. */
  drain(): void {
    this.draining = true;
    this.wake.abort();
  }

  /** Second SIGTERM: stop the current job now and hand it back to the queue. */
  force(): void {
    this.drain();
    this.forced = true;
    this.current?.stop(this.o.stopGraceMs);
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
        msg = await this.o.queue.receive({ waitMs: Math.min(left, 20_000), visibilityMs: this.o.visibilityMs, signal: this.wake.signal });
      } catch (e) {
        this.o.log.log('error', 'receive failed', { error: toError(e).message });
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (!msg) continue;
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

  private async handle(msg: QueueMessage): Promise<void> {
    let spec: JobSpec;
    try {
      spec = JSON.parse(msg.body) as JobSpec;
    } catch {
      this.o.log.log('error', 'dropping a message that is not a job spec', { messageId: msg.id });
      await this.o.queue.ack(msg.receipt);
      return;
    }
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
      await settleRun(this.o.store, repoId, runName, final('failed', null, reason, previous.length));
      log.log('error', 'job failed: too many attempts; moving it to the dead-letter queue');
      await this.o.queue.deadLetter(msg.receipt);
      return;
    }
    if (await readJson(this.o.store, runKeys.stop(repoId, runName), StopRequestSchema)) {
      await settleRun(this.o.store, repoId, runName, final('stopped', null, 'stopped before it started', attempt));
      await this.o.queue.ack(msg.receipt);
      return;
    }
    const started = Date.now();
    log.log('info', 'job started');
    const outcome = await this.runJob(spec, msg, attempt, log);
    if (outcome === 'settled') await this.o.queue.ack(msg.receipt).catch((e: unknown) => log.log('warn', 'ack failed', { error: toError(e).message }));
    if (outcome === 'released') await this.o.queue.release(msg.receipt).catch(() => undefined);
    log.log('info', 'job ended', { outcome, durationMs: Date.now() - started });
  }

  /** The attempt of another agent whose heartbeat is still fresh, if any. */
  private async liveHolder(attemptKeys: string[]): Promise<AttemptRecord | undefined> {
    const last = attemptKeys[attemptKeys.length - 1];
    if (!last) return undefined;
    const a = await readJson(this.o.store, last, AttemptRecordSchema);
    if (!a || a.state !== 'running' || a.agentId === this.o.agentId) return undefined;
    return Date.now() - Date.parse(a.heartbeatAt) < a.leaseMs ? a : undefined;
  }

  private async runJob(spec: JobSpec, msg: QueueMessage, attempt: number, log: Logger): Promise<Outcome> {
    const { store } = this.o;
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
        await this.o.queue.defer(msg.receipt, this.o.visibilityMs);
        return 'parked';
      }
      throw e;
    }

    let stopRequest: StopRequest | null = null;
    let leaseLost = false;
    let ended = false;
    let proc: JobProcess | undefined;
    let timer: NodeJS.Timeout | undefined;
    let nextBeat = Date.now() + this.o.heartbeatMs;
    const applyStop = (): void => {
      if (!proc || !stopRequest) return;
      if (stopRequest.abort) proc.abort();
      else proc.stop(this.o.stopGraceMs);
    };
    // Re-armed with setTimeout so that beats never overlap.
    const tick = async (): Promise<void> => {
      try {
        if (Date.now() >= nextBeat) {
          await this.o.queue.extend(msg.receipt, this.o.visibilityMs);
          record.heartbeatAt = now();
          await store.put(attemptKey, JSON.stringify(record)).catch(() => undefined);
          nextBeat = Date.now() + this.o.heartbeatMs;
        }
        stopRequest ??= await readJson(store, runKeys.stop(repoId, runName), StopRequestSchema);
        applyStop();
      } catch (e) {
        if (e instanceof LeaseLostError || !ended) {
          leaseLost = true;
          log.log('error', 'lease lost: abandoning the job', { error: toError(e).message });
          proc?.abort();
          return;
        }
      }
      if (!ended) timer = setTimeout(() => void tick(), this.o.tickMs);
    };
    timer = setTimeout(() => void tick(), this.o.tickMs);

    const jobDir = join(this.o.workRoot, `${runName}-${attempt}-${randomBytes(3).toString('hex')}`);
    const shipper = new LogShipper(store, (seq) => runKeys.logChunk(repoId, runName, attempt, seq));
    const codeDir = join(jobDir, 'code');
    const saver = new ArtifactSaver(store, spec, codeDir);
    let syncTimer: NodeJS.Timeout | undefined;
    let started = false;
    let result: FinalRecord;
    try {
      await rebuildCode(store, spec.code, codeDir);
      const prepared = await prepareRun(spec, jobDir, codeDir, this.o.jobEnv);
      await restoreDeps(store, spec, codeDir, (line) => shipper.write('err', line));
      // A later attempt resumes: what the earlier ones saved (checkpoints included) is put back first.
      if (attempt > 1) await restoreCheckpoint(store, spec, codeDir, (line) => shipper.write('err', line));
      if (leaseLost) return 'lease-lost';
      proc = startJob(prepared.script, { cwd: prepared.cwd, env: prepared.env });
      started = true;
      this.current = proc;
      proc.stdout.on('data', (d: Buffer) => shipper.write('out', d));
      proc.stderr.on('data', (d: Buffer) => shipper.write('err', d));
      applyStop();
      if (saver.hasMounted) {
        // `mount: true`: save while the job runs, so that a stopped or killed job keeps its progress.
        const sync = (): void => {
          syncTimer = setTimeout(() => {
            saver.save(false).then(sync, (e: unknown) => {
              log.log('warn', 'incremental artifact save failed', { error: toError(e).message });
              sync();
            });
          }, this.o.artifactSyncMs);
        };
        sync();
      }
      const exit = await proc.exited;
      result = stopRequest ? final('stopped', exit.code, stopReason(stopRequest), attempt) : exitFinal(exit, attempt);
    } catch (e) {
      const err = toError(e);
      result = final('failed', null, err instanceof JobFailedError ? err.message : `agent error: ${err.message}`, attempt);
      shipper.write('err', `dstack: ${result.reason ?? ''}\n`);
    } finally {
      ended = true;
      clearTimeout(timer);
      clearTimeout(syncTimer);
      this.current = undefined;
    }
    // Whatever the job produced is kept, however it ended, unless another agent now owns the job.
    if (started && !leaseLost) {
      try {
        await saver.save(true);
      } catch (e) {
        const reason = toError(e).message;
        if (result.status === 'done') result = final('failed', result.exitCode, reason, attempt);
        shipper.write('err', `dstack: ${reason}\n`);
      }
    }
    try {
      await shipper.close();
    } catch (e) {
      log.log('warn', 'some log chunks could not be stored', { error: toError(e).message });
    }
    await rm(jobDir, { recursive: true, force: true }).catch(() => undefined);
    record.state = 'ended';
    record.endedAt = now();
    if (leaseLost) return 'lease-lost';
    // Forced off (a second SIGTERM, a spot notice) before it finished: what it saved is the
    // checkpoint the next attempt resumes from.
    if (this.forced && !stopRequest && result.status !== 'done') {
      if (this.interruption) record.interruption = this.interruption;
      await store.put(attemptKey, JSON.stringify(record));
      log.log('warn', 'job handed back to the queue; its artifacts are saved as a checkpoint', { reason: this.interruption ?? 'forced stop' });
      return 'released';
    }
    const settled = await settleRun(store, repoId, runName, result);
    await store.put(attemptKey, JSON.stringify(record));
    if (settled.status === 'done' && settled === result && spec.cacheKey) {
      await store.put(runKeys.cache(repoId, spec.cacheKey), JSON.stringify({ runName })).catch(() => undefined);
    }
    log.log('info', `job ${settled.status}`, { exitCode: settled.exitCode, reason: settled.reason });
    return 'settled';
  }
}

function final(status: FinalRecord['status'], exitCode: number | null, reason: string | null, attempt: number): FinalRecord {
  return { status, exitCode, reason, finishedAt: new Date().toISOString(), attempt };
}

function stopReason(stop: StopRequest): string {
  return stop.abort ? 'aborted by the user (SIGKILL)' : 'stopped by the user';
}

function exitFinal(exit: JobExit, attempt: number): FinalRecord {
  if (exit.code === 0) return final('done', 0, null, attempt);
  if (exit.code !== null) {
    return final('failed', exit.code, `a command exited with code ${exit.code}`, attempt);
  }
  const hint = exit.signal === 'SIGKILL' ? ' (out of memory?)' : '';
  return final('failed', null, `the job was killed by ${exit.signal ?? 'a signal'}${hint}`, attempt);
}
