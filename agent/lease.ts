import { rename, rm, writeFile } from 'node:fs/promises';
import { LeaseLostError, toError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Queue } from '../common/ports.js';

/** Time as the Lease sees it; tests pass a fake one. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface LeaseOptions {
  queue: Pick<Queue, 'extend'>;
  receipt: string;
  /** How long one extension holds the job, from the moment it was asked for. */
  visibilityMs: number;
  /** Time between two successful proofs; well under `visibilityMs`. */
  heartbeatMs: number;
  /** Time between two tries after a failed proof (a transient S3 or SQS error). */
  retryMs?: number;
  /** Writes the Store heartbeat (the attempt record): after the SQS hand-over, the only lease there is. */
  writeHeartbeat: () => Promise<void>;
  /**
   * A file that holds, in epoch ms, the time until which the lease is proven; rewritten after every
   * proof. The job's watchdog kills the job once that time has passed, so a frozen agent, which can
   * neither fire the signal nor refresh the file, cannot leave its job running.
   */
  deadlineFile?: string;
  log: Logger;
  clock?: Clock;
}

/**
 * Holds one job: extends the queue lease and writes the Store heartbeat, re-armed with setTimeout so
 * that proofs never overlap. A failed proof is retried while the lease still has time; `signal`
 * aborts (with a LeaseLostError) when the queue says the lease is gone, or when the proven time runs
 * out before a proof succeeds (a hanging call, a long outage, a stalled process).
 */
export class Lease {
  private readonly controller = new AbortController();
  private readonly clock: Clock;
  /** Until when this holder can prove the job is its own (epoch ms, the lease clock). */
  private provenUntil: number;
  private beatTimer: unknown;
  private deadlineTimer: unknown;
  private running: Promise<boolean> | undefined;
  /** Deadline file writes, one after another, off the proof's path: a slow disk must not delay a beat. */
  private fileChain: Promise<void> = Promise.resolve();
  private stopped = false;
  private failingSince: number | undefined;

  constructor(private readonly o: LeaseOptions) {
    this.clock = o.clock ?? systemClock;
    // The receive itself leased the job for `visibilityMs`; count from now, which is later than that.
    this.provenUntil = this.clock.now() + this.safeMs();
  }

  /** Aborted when the job can no longer be proven held; its reason is a LeaseLostError. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Until when (epoch ms) the job is proven held. */
  get deadlineMs(): number {
    return this.provenUntil;
  }

  /** Writes the first deadline and arms the heartbeat. */
  async start(): Promise<void> {
    this.writeDeadline();
    await this.fileChain;
    this.armDeadline();
    this.armBeat(this.o.heartbeatMs);
  }

  /**
   * Proves the lease now (extend and heartbeat) and says whether the job is still held: what the
   * worker asks before it settles, so that a holder that lapsed while frozen never settles.
   */
  async confirm(): Promise<boolean> {
    // A transient failure is retried while the lease lasts; the deadline timer ends the wait.
    for (;;) {
      this.expireIfPast();
      if (this.controller.signal.aborted) return false;
      if (await this.untilAborted(this.prove())) return true;
      if (this.controller.signal.aborted) return false;
      await new Promise<void>((resolve) => this.clock.setTimeout(resolve, this.retryMs()));
    }
  }

  /** `p`, or false as soon as the lease is lost: a proof that hangs must not hold up the caller. */
  private untilAborted(p: Promise<boolean>): Promise<boolean> {
    const signal = this.controller.signal;
    if (signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const onAbort = (): void => resolve(false);
      signal.addEventListener('abort', onAbort, { once: true });
      void p.then((ok) => {
        signal.removeEventListener('abort', onAbort);
        resolve(ok);
      });
    });
  }

  private retryMs(): number {
    return this.o.retryMs ?? Math.min(1000, this.o.heartbeatMs / 2);
  }

  /** Stops beating; the deadline file is removed. Does not abort the signal. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.clock.clearTimeout(this.beatTimer);
    this.clock.clearTimeout(this.deadlineTimer);
    // A proof under way (perhaps hanging) is not waited for: it can no longer re-arm or write.
    await this.fileChain;
    if (this.o.deadlineFile) await rm(this.o.deadlineFile, { force: true }).catch(() => undefined);
  }

  /** How long one proof counts for: a margin short of the lease, so that the job is dead before anyone else may take it. */
  private safeMs(): number {
    return this.o.visibilityMs - Math.min(2000, this.o.visibilityMs / 5);
  }

  private lose(why: string, cause?: unknown): void {
    if (this.controller.signal.aborted) return;
    this.clock.clearTimeout(this.beatTimer);
    this.clock.clearTimeout(this.deadlineTimer);
    const err = new LeaseLostError(why, cause === undefined ? {} : { cause });
    this.o.log.log('error', 'lease lost: abandoning the job', { error: err.message });
    this.controller.abort(err);
  }

  private expireIfPast(): void {
    if (this.clock.now() >= this.provenUntil) {
      const since = this.failingSince === undefined ? '' : ` (failing for ${this.clock.now() - this.failingSince} ms)`;
      this.lose(`the lease could not be extended before it ran out${since}`);
    }
  }

  private armDeadline(): void {
    this.clock.clearTimeout(this.deadlineTimer);
    this.deadlineTimer = this.clock.setTimeout(() => this.expireIfPast(), Math.max(0, this.provenUntil - this.clock.now()));
  }

  private armBeat(ms: number): void {
    if (this.stopped || this.controller.signal.aborted) return;
    this.clock.clearTimeout(this.beatTimer);
    this.beatTimer = this.clock.setTimeout(() => {
      void this.prove().then((ok) => this.armBeat(ok ? this.o.heartbeatMs : this.retryMs()));
    }, ms);
  }

  /** One proof at a time: a second caller waits for the one under way. */
  private prove(): Promise<boolean> {
    this.running ??= this.proveOnce().finally(() => (this.running = undefined));
    return this.running;
  }

  private async proveOnce(): Promise<boolean> {
    const askedAt = this.clock.now();
    try {
      await this.o.queue.extend(this.o.receipt, this.o.visibilityMs);
      await this.o.writeHeartbeat();
    } catch (e) {
      // Stopped while this proof was under way: the job has ended, so nothing is lost or re-armed.
      if (this.stopped) return false;
      if (e instanceof LeaseLostError) {
        this.lose(e.message, e);
        return false;
      }
      this.failingSince ??= askedAt;
      this.o.log.log('warn', 'could not extend the lease: retrying while it lasts', {
        error: toError(e).message,
        leftMs: this.provenUntil - this.clock.now(),
      });
      return false;
    }
    if (this.stopped) return false;
    // A proof that came back after the deadline proves nothing: the job may be someone else's now.
    if (this.controller.signal.aborted || this.clock.now() >= this.provenUntil) {
      this.expireIfPast();
      return false;
    }
    this.failingSince = undefined;
    this.provenUntil = askedAt + this.safeMs();
    this.writeDeadline();
    this.armDeadline();
    return true;
  }

  private writeDeadline(): void {
    const file = this.o.deadlineFile;
    const until = this.provenUntil;
    if (!file) return;
    this.fileChain = this.fileChain.then(async () => {
      if (this.stopped) return;
      // Written whole then renamed: the watchdog must never read a half-written (smaller) number.
      const tmp = `${file}.tmp`;
      try {
        await writeFile(tmp, `${until}\n`);
        await rename(tmp, file);
      } catch (e) {
        // The watchdog then kills the job at the last deadline it read: early, never late.
        this.o.log.log('warn', 'could not write the lease deadline file', { error: toError(e).message });
      }
    });
  }
}
