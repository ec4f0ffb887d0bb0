import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { z } from 'zod';
import { JobFailedError, errnoCode } from '../common/errors.js';
import { describeGpus, gpusFitting, type Gpu } from '../common/gpus.js';
import { isAlive } from '../common/local/local-compute.js';
import type { ResourceSpec } from '../common/spec/job-spec.js';

/** GPUs held for one attempt: their `nvidia-smi` indices, until `release`. */
export interface GpuGrant {
  indices: number[];
  release(): Promise<void>;
}

/**
 * The GPUs of this machine, shared by the agents on it: each job that asks for GPUs gets its own.
 * `acquire` waits (saying so through `say`) while other jobs hold them, fails with a JobFailedError
 * when this machine can never serve the request, and rejects with `signal.reason` when aborted.
 */
export interface GpuPool {
  acquire(want: NonNullable<ResourceSpec['gpu']>, holder: string, signal: AbortSignal, say: (line: string) => void, o?: { deadlineFile?: string }): Promise<GpuGrant>;
}

/** A GPU's claim file: who holds it, in the name of which process on which host. */
/** `deadlineFile`: the holder's lease deadline (see lease.ts); once past, the holder's job has been killed, even if its agent is frozen. */
const ClaimSchema = z.object({ holder: z.string(), pid: z.number().int(), host: z.string(), since: z.string(), deadlineFile: z.string().optional() });
type Claim = z.infer<typeof ClaimSchema>;

export interface MachineGpuPoolOptions {
  /** This machine's GPUs, as `listGpus` found them at the agent's start. */
  gpus: Gpu[];
  /** The folder shared by every agent of this machine: one claim file per GPU held (`<index>.json`). */
  dir: string;
  /** The process claims are made in the name of: the agent's, so that a killed agent's claims free themselves. */
  pid: number;
  host: string;
  /** How often a waiting job looks again; 500 ms by default. */
  pollMs?: number;
}

/**
 * The GPUs of this machine, assigned through claim files in a folder every agent here shares. A claim
 * is created exclusively (link(2) of a complete file: never seen half written), and all the claims
 * of one job are taken under one lock on the folder, so a job gets all its GPUs or none and two jobs
 * waiting for two GPUs each never hold one each forever. A claim whose process is gone from this host
 * is stale, and is removed by the next job that wants its GPU.
 */
export class MachineGpuPool implements GpuPool {
  private readonly pollMs: number;

  constructor(private readonly o: MachineGpuPoolOptions) {
    this.pollMs = o.pollMs ?? 500;
  }

  async acquire(want: NonNullable<ResourceSpec['gpu']>, holder: string, signal: AbortSignal, say: (line: string) => void, o: { deadlineFile?: string } = {}): Promise<GpuGrant> {
    const fit = gpusFitting(this.o.gpus, want);
    if (fit.length < want.count) throw new JobFailedError(neverServed(want, this.o.gpus));
    const waitingSince = Date.now();
    let said = false;
    for (;;) {
      signal.throwIfAborted();
      const taken = await this.tryTake(fit, want.count, holder, o.deadlineFile);
      if (Array.isArray(taken)) {
        if (said) say(`got GPU ${taken.join(', ')} after waiting ${Math.round((Date.now() - waitingSince) / 1000)}s`);
        return this.grant(taken);
      }
      if (!said) {
        say(`waiting for ${gpuCount(want.count)}: ${heldLine(taken)}`);
        said = true;
      }
      await pause(this.pollMs, signal);
    }
  }

  /** Takes `count` of `fit` (lowest indices first), or none and returns the claims that keep them. */
  private async tryTake(fit: Gpu[], count: number, holder: string, deadlineFile: string | undefined): Promise<number[] | Map<number, Claim>> {
    const { dir } = this.o;
    await mkdir(dir, { recursive: true });
    const unlock = await lockfile.lock(dir, {
      realpath: false,
      lockfilePath: join(dir, '.lock'),
      stale: 10_000,
      retries: { retries: 200, minTimeout: 10, maxTimeout: 100 },
      onCompromised: () => undefined,
    });
    try {
      const held = new Map<number, Claim>();
      const free: number[] = [];
      for (const g of fit) {
        const claim = await this.readClaim(g.index);
        if (claim === null) free.push(g.index);
        else held.set(g.index, claim);
      }
      if (free.length < count) return held;
      const mine: Claim = { holder, pid: this.o.pid, host: this.o.host, since: new Date().toISOString(), ...(deadlineFile !== undefined ? { deadlineFile } : {}) };
      const taken: number[] = [];
      try {
        for (const index of free.slice(0, count)) {
          await claimExclusively(dir, index, mine);
          taken.push(index);
        }
      } catch (e) {
        await Promise.all(taken.map((i) => rm(claimPath(dir, i), { force: true })));
        throw e;
      }
      return taken;
    } finally {
      await unlock().catch(() => undefined);
    }
  }

  /** The live claim on a GPU, or null when it is free; a stale claim (its process gone from this host, or unreadable) is removed. */
  private async readClaim(index: number): Promise<Claim | null> {
    const path = claimPath(this.o.dir, index);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return null;
      throw e;
    }
    let claim: Claim | undefined;
    try {
      claim = ClaimSchema.parse(JSON.parse(text));
    } catch {
      claim = undefined;
    }
    // A claim of another host (a home shared over NFS, say) can't be judged from here: it holds.
    if (claim !== undefined && (claim.host !== this.o.host || (isAlive(claim.pid) && !(await leaseLapsed(claim.deadlineFile))))) return claim;
    await rm(path, { force: true });
    return null;
  }

  private grant(indices: number[]): GpuGrant {
    let released = false;
    return {
      indices,
      release: async () => {
        if (released) return;
        released = true;
        await Promise.all(indices.map((i) => rm(claimPath(this.o.dir, i), { force: true })));
      },
    };
  }
}

/**
 * Whether the holder's lease deadline has passed: a frozen agent (SIGSTOP) keeps its pid alive, but its
 * job was killed at that deadline (the watchdog) and another attempt may run it. No file: not lapsed.
 */
async function leaseLapsed(deadlineFile: string | undefined): Promise<boolean> {
  if (deadlineFile === undefined) return false;
  const text = await readFile(deadlineFile, 'utf8').catch(() => '');
  return /^\d+$/.test(text.trim()) && Number(text.trim()) < Date.now();
}

function claimPath(dir: string, index: number): string {
  return join(dir, `${index}.json`);
}

/** Writes the claim whole to a temporary file, then links it in: the link fails (EEXIST) if the GPU is claimed. */
async function claimExclusively(dir: string, index: number, claim: Claim): Promise<void> {
  const tmp = join(dir, `.${index}.${claim.pid}.${randomBytes(4).toString('hex')}.tmp`);
  await writeFile(tmp, JSON.stringify(claim), { flag: 'wx' });
  try {
    await link(tmp, claimPath(dir, index));
  } finally {
    await rm(tmp, { force: true });
  }
}

/** The line for a request this machine can never serve: what it asked, what the machine has, and the override. */
function neverServed(want: NonNullable<ResourceSpec['gpu']>, gpus: Gpu[]): string {
  const what = [want.name !== undefined ? `named \`${want.name}\`` : '', want.memoryMiB !== undefined ? `with ${want.memoryMiB} MiB or more` : ''].filter((s) => s !== '').join(' and ');
  return `the job asks for ${gpuCount(want.count)}${what === '' ? '' : ` ${what}`}, and this machine has ${describeGpus(gpus)}: run it with \`--gpu 0\`, or on a machine that has ${want.count === 1 ? 'it' : 'them'}`;
}

function gpuCount(n: number): string {
  return `${n} GPU${n === 1 ? '' : 's'}`;
}

/** `GPU 0 is held by another job on this machine (run-a/1)`, `GPU 0 and 1 are held by other jobs on this machine (run-a/1, run-b/1)`. */
function heldLine(held: Map<number, Claim>): string {
  const indices = [...held.keys()];
  const holders = [...new Set([...held.values()].map((c) => c.holder))];
  const gpus = indices.length === 1 ? `GPU ${indices[0] ?? ''} is held by another job` : `GPU ${indices.slice(0, -1).join(', ')} and ${indices.at(-1) ?? ''} are held by other jobs`;
  return `${gpus} on this machine (${holders.join(', ')})`;
}

/** Resolves after `ms`, or rejects with `signal.reason` as soon as it aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
