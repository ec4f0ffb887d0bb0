import { watch, type FSWatcher } from 'node:fs';
import { mkdir, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, join } from 'node:path';
import lockfile from 'proper-lockfile';
import { LeaseLostError, errnoCode } from '../errors.js';
import type { Queue, QueueCounts, QueueMessage } from '../ports.js';
import { writeFileAtomic } from './local-store.js';

interface StoredMessage {
  id: string;
  body: string;
  sentAtMs: number;
  receiveCount: number;
  visibleAtMs: number;
  receipt: string | null;
}

export interface LocalQueueOptions {
  /** Directory that holds all local queues. */
  root: string;
  name: string;
  /** Deliveries after which a message goes to `<name>-dlq` instead of being delivered again. */
  maxReceives: number;
  /** Fallback poll interval while waiting; file-system events usually wake receivers sooner. */
  pollMs?: number;
  now?: () => number;
  /** Where the one line about a quarantined file goes (default: stderr). */
  warn?: (line: string) => void;
}

/** A message file that is not valid JSON or not a message: it is moved aside, never delivered. */
class CorruptMessage extends Error {}

/** Parses a message file's text with its shape checked, not cast. */
function parseMessage(text: string): StoredMessage {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new CorruptMessage(`not JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  const m = v as Partial<Record<keyof StoredMessage, unknown>> | null;
  const ok =
    typeof m === 'object' &&
    m !== null &&
    typeof m.id === 'string' &&
    /^[0-9A-Za-z-]+$/.test(m.id) &&
    typeof m.body === 'string' &&
    typeof m.sentAtMs === 'number' &&
    typeof m.receiveCount === 'number' &&
    typeof m.visibleAtMs === 'number' &&
    (m.receipt === null || typeof m.receipt === 'string');
  if (!ok) throw new CorruptMessage('not a queue message');
  return m as StoredMessage;
}

/**
 * The embedded Queue: one JSON file per message in a directory, every state change made under a
 * cross-process lock and written atomically, so it is safe with agents in several processes and
 * survives any of them crashing. Leases are deadlines in the message file.
 */
export class LocalQueue implements Queue {
  private readonly dir: string;
  private readonly deadDir: string;
  /** Where message files are staged; what a crash leaves here is removed by `dstack gc`. */
  readonly tmpDir: string;
  private readonly quarantineDir: string;
  private readonly opts: LocalQueueOptions;
  private readonly now: () => number;

  constructor(opts: LocalQueueOptions) {
    this.opts = opts;
    this.dir = join(opts.root, opts.name);
    this.deadDir = join(opts.root, `${opts.name}-dlq`);
    this.tmpDir = join(opts.root, '.tmp');
    this.quarantineDir = join(opts.root, `${opts.name}-quarantine`);
    this.now = opts.now ?? Date.now;
  }

  private async locked<T>(fn: () => Promise<T>): Promise<T> {
    await mkdir(this.dir, { recursive: true });
    const release = await lockfile.lock(this.dir, {
      realpath: false,
      lockfilePath: `${this.dir}.lock`,
      stale: 5000,
      retries: { retries: 200, minTimeout: 2, maxTimeout: 50, factor: 1.5 },
      // A lost lock only means another process may now take it; the next operation re-locks.
      onCompromised: () => undefined,
    });
    try {
      return await fn();
    } finally {
      await release().catch(() => undefined);
    }
  }

  private file(id: string, dir = this.dir): string {
    return join(dir, `${id}.json`);
  }

  private async readAll(dir: string): Promise<StoredMessage[]> {
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => n.endsWith('.json')).sort();
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return [];
      throw e;
    }
    const out: StoredMessage[] = [];
    for (const name of names) {
      try {
        out.push(await this.readMessage(join(dir, name)));
      } catch (e) {
        if (errnoCode(e) !== 'ENOENT' && !(e instanceof CorruptMessage)) throw e;
      }
    }
    return out;
  }

  /**
   * Reads one message file. A corrupt one is moved to `<name>-quarantine/` with one log line, so
   * that one bad file never stops the queue; CorruptMessage (or ENOENT) is thrown for it.
   */
  private async readMessage(path: string): Promise<StoredMessage> {
    const text = await readFile(path, 'utf8');
    try {
      return parseMessage(text);
    } catch (e) {
      if (!(e instanceof CorruptMessage)) throw e;
      const aside = join(this.quarantineDir, basename(path));
      await mkdir(this.quarantineDir, { recursive: true });
      try {
        await rename(path, aside);
        (this.opts.warn ?? ((l: string) => void process.stderr.write(`${l}\n`)))(`dstack: queue message file ${path} is corrupt (${e.message}): moved to ${aside}`);
      } catch (err) {
        // Another process moved it first: it has said so.
        if (errnoCode(err) !== 'ENOENT') throw err;
      }
      throw e;
    }
  }

  private async findByReceipt(receipt: string): Promise<StoredMessage> {
    const id = receipt.split(':')[0] ?? '';
    let msg: StoredMessage;
    try {
      msg = await this.readMessage(this.file(id));
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || e instanceof CorruptMessage) throw new LeaseLostError(`message ${id} is gone`);
      throw e;
    }
    if (msg.receipt !== receipt || msg.visibleAtMs <= this.now()) {
      throw new LeaseLostError(`lease on message ${id} has expired or passed to another receiver`);
    }
    return msg;
  }

  async send(body: string): Promise<string> {
    const now = this.now();
    const id = `${now.toString().padStart(15, '0')}-${randomBytes(6).toString('hex')}`;
    const msg: StoredMessage = { id, body, sentAtMs: now, receiveCount: 0, visibleAtMs: 0, receipt: null };
    await mkdir(this.dir, { recursive: true });
    await writeFileAtomic(this.tmpDir, this.file(id), JSON.stringify(msg));
    return id;
  }

  async receive(options: { waitMs: number; visibilityMs: number; signal?: AbortSignal }): Promise<QueueMessage | undefined> {
    const deadline = this.now() + options.waitMs;
    await mkdir(this.dir, { recursive: true });
    // One watcher for the whole wait: a change seen while we were looking sends us round again at once.
    const changes = new ChangeSignal(this.dir);
    try {
      for (;;) {
        changes.reset();
        const { message, nextVisibleAtMs } = await this.locked(() => this.tryReceive(options.visibilityMs));
        if (message) return message;
        const left = deadline - this.now();
        if (left <= 0 || options.signal?.aborted) return undefined;
        const until = Math.min(left, this.opts.pollMs ?? 500, Math.max(1, nextVisibleAtMs - this.now()));
        await changes.wait(until, options.signal);
      }
    } finally {
      changes.close();
    }
  }

  private async tryReceive(visibilityMs: number): Promise<{ message?: QueueMessage; nextVisibleAtMs: number }> {
    const now = this.now();
    let nextVisibleAtMs = Infinity;
    for (const msg of await this.readAll(this.dir)) {
      if (msg.visibleAtMs > now) {
        nextVisibleAtMs = Math.min(nextVisibleAtMs, msg.visibleAtMs);
        continue;
      }
      if (msg.receiveCount >= this.opts.maxReceives) {
        await this.moveToDead(msg);
        continue;
      }
      const receipt = `${msg.id}:${randomBytes(8).toString('hex')}`;
      const updated: StoredMessage = { ...msg, receiveCount: msg.receiveCount + 1, receipt, visibleAtMs: now + visibilityMs };
      await writeFileAtomic(this.tmpDir, this.file(msg.id), JSON.stringify(updated));
      return { message: { id: msg.id, receipt, body: msg.body, receiveCount: updated.receiveCount }, nextVisibleAtMs };
    }
    return { nextVisibleAtMs };
  }

  async extend(receipt: string, visibilityMs: number): Promise<void> {
    await this.locked(async () => {
      const msg = await this.findByReceipt(receipt);
      await writeFileAtomic(this.tmpDir, this.file(msg.id), JSON.stringify({ ...msg, visibleAtMs: this.now() + visibilityMs }));
    });
  }

  async ack(receipt: string): Promise<void> {
    await this.locked(async () => {
      const msg = await this.findByReceipt(receipt);
      await unlink(this.file(msg.id));
    });
  }

  async release(receipt: string, delayMs = 0): Promise<void> {
    await this.locked(async () => {
      const msg = await this.findByReceipt(receipt);
      await writeFileAtomic(this.tmpDir, this.file(msg.id), JSON.stringify({ ...msg, receipt: null, visibleAtMs: this.now() + delayMs }));
    });
  }

  async defer(receipt: string, delayMs: number): Promise<void> {
    await this.locked(async () => {
      const msg = await this.findByReceipt(receipt);
      const parked = { ...msg, receipt: null, visibleAtMs: this.now() + delayMs, receiveCount: Math.max(0, msg.receiveCount - 1) };
      await writeFileAtomic(this.tmpDir, this.file(msg.id), JSON.stringify(parked));
    });
  }

  async deadLetter(receipt: string): Promise<void> {
    await this.locked(async () => this.moveToDead(await this.findByReceipt(receipt)));
  }

  /** Under the lock: the message leaves the queue for its dead-letter queue. */
  private async moveToDead(msg: StoredMessage): Promise<void> {
    await mkdir(this.deadDir, { recursive: true });
    await writeFileAtomic(this.tmpDir, this.file(msg.id, this.deadDir), JSON.stringify({ ...msg, receipt: null, visibleAtMs: 0 }));
    await unlink(this.file(msg.id));
  }

  async counts(): Promise<QueueCounts> {
    const now = this.now();
    const live = await this.readAll(this.dir);
    const dead = await this.readAll(this.deadDir);
    const inFlight = live.filter((m) => m.receipt !== null && m.visibleAtMs > now).length;
    return { visible: live.length - inFlight, inFlight, dead: dead.length };
  }

  /** Moves a message from the dead-letter queue back to this queue (a redrive), resetting its count. */
  async redrive(id: string): Promise<void> {
    await this.locked(async () => {
      const msg = await this.readMessage(this.file(id, this.deadDir));
      await writeFileAtomic(this.tmpDir, this.file(id), JSON.stringify({ ...msg, receiveCount: 0, receipt: null, visibleAtMs: 0 }));
      await unlink(this.file(id, this.deadDir));
    });
  }
}

/** Watches a directory; `wait` returns at once if something changed since `reset`. */
class ChangeSignal {
  private changed = false;
  private wake: (() => void) | undefined;
  private readonly watcher: FSWatcher | undefined;

  constructor(dir: string) {
    try {
      this.watcher = watch(dir, { persistent: false }, () => {
        this.changed = true;
        this.wake?.();
      });
      this.watcher.on('error', () => undefined);
    } catch {
      // Without file-system events the poll interval still wakes receivers.
    }
  }

  reset(): void {
    this.changed = false;
  }

  wait(ms: number, signal?: AbortSignal): Promise<void> {
    if (this.changed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wake = undefined;
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener('abort', done, { once: true });
      this.wake = done;
    });
  }

  close(): void {
    this.watcher?.close();
  }
}
