import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { sha256 } from '../hash.js';

/** Below this size a buffer is hashed on the calling thread: a round trip to a worker costs more. */
const POOL_MIN_BYTES = 1024 * 1024;

/**
 * The worker's code, as a string: the CLI and the agent are esbuild bundles, so a worker cannot load
 * a file of its own from dist/. It hashes the buffer it is given and hands the memory back.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const shared = new Map();
parentPort.on('message', (m) => {
  if (m.shared !== undefined) {
    if (m.buffer) shared.set(m.shared, m.buffer);
    const data = new Uint8Array(shared.get(m.shared), m.offset, m.length);
    parentPort.postMessage({ id: m.id, hex: createHash('sha256').update(data).digest('hex') });
    return;
  }
  const data = new Uint8Array(m.buffer, m.offset, m.length);
  const hex = createHash('sha256').update(data).digest('hex');
  const parts = m.parts && m.parts.map(([o, n]) => createHash('sha256').update(data.subarray(o, o + n)).digest('hex'));
  parentPort.postMessage({ id: m.id, hex, parts, buffer: m.buffer }, [m.buffer]);
});
`;

interface Hashed {
  hex: string;
  /** The hashes of the ranges asked for, in order. */
  parts?: string[];
  buffer?: ArrayBuffer;
}

interface Task {
  id: number;
  resolve: (r: Hashed) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  busy: Map<number, Task>;
  /** The shared buffers this worker already holds (sent once, then named by number). */
  shared: Set<number>;
}

/** Numbers for shared buffers (the chunk slots), so that each is sent to a worker only once. */
const sharedIds = new WeakMap<SharedArrayBuffer, number>();
let nextShared = 0;

/**
 * A few worker threads that hash large buffers in parallel, one per core. The buffer's memory is
 * moved to the worker and back (no copy); meanwhile the caller must not touch it. Workers start on
 * the first large hash and do not keep the process alive while idle.
 */
class HashPool {
  private slots: Slot[] = [];
  private nextId = 0;
  private readonly size = Math.max(1, Math.min(4, availableParallelism()));

  private slot(): Slot {
    if (this.slots.length < this.size) {
      const worker = new Worker(WORKER_SOURCE, { eval: true });
      const slot: Slot = { worker, busy: new Map(), shared: new Set() };
      worker.unref();
      worker.on('message', (m: Hashed & { id: number }) => {
        const task = slot.busy.get(m.id);
        slot.busy.delete(m.id);
        if (slot.busy.size === 0) worker.unref();
        task?.resolve(m);
      });
      const fail = (e: Error): void => {
        this.slots = this.slots.filter((s) => s !== slot);
        for (const task of slot.busy.values()) task.reject(e);
        slot.busy.clear();
      };
      worker.on('error', fail);
      worker.on('exit', (code) => fail(new Error(`a hashing thread exited (code ${code})`)));
      this.slots.push(slot);
      return slot;
    }
    return this.slots.reduce((a, b) => (b.busy.size < a.busy.size ? b : a));
  }

  /** Hashes bytes of a buffer: an ArrayBuffer is moved there and back; a SharedArrayBuffer is read in place. */
  run(buffer: ArrayBuffer | SharedArrayBuffer, offset: number, length: number, parts?: Array<[number, number]>): Promise<Hashed> {
    const slot = this.slot();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      slot.busy.set(id, { id, resolve, reject });
      slot.worker.ref();
      if (buffer instanceof SharedArrayBuffer) {
        let shared = sharedIds.get(buffer);
        if (shared === undefined) sharedIds.set(buffer, (shared = nextShared++));
        const known = slot.shared.has(shared);
        slot.shared.add(shared);
        slot.worker.postMessage({ id, shared, buffer: known ? undefined : buffer, offset, length });
      } else slot.worker.postMessage({ id, buffer, offset, length, parts }, [buffer]);
    });
  }
}

let pool: HashPool | undefined;

/**
 * Hex sha256 of `data`, on a worker thread when it is large, so that several chunks hash at once.
 * Resolves to the hash and the same bytes. A buffer over shared memory (a chunk slot) is read where it
 * is and must not change meanwhile; any other large buffer is moved there and back, comes back as a
 * new Buffer over the same memory, and `data` itself must not be used after the call.
 */
export async function hashChunk(data: Buffer): Promise<{ sha: string; data: Buffer }> {
  if (data.length >= POOL_MIN_BYTES && data.buffer instanceof SharedArrayBuffer) {
    pool ??= new HashPool();
    return { sha: (await pool.run(data.buffer, data.byteOffset, data.length)).hex, data };
  }
  // Only a buffer that owns its whole ArrayBuffer can be moved (small ones share Node's pool).
  if (data.length < POOL_MIN_BYTES || data.byteOffset !== 0 || data.buffer.byteLength !== data.length || !(data.buffer instanceof ArrayBuffer)) {
    return { sha: sha256(data), data };
  }
  pool ??= new HashPool();
  // Moving the memory detaches `data` (its length reads 0 from then on).
  const length = data.length;
  const { hex, buffer } = await pool.run(data.buffer, 0, length);
  if (!buffer) throw new Error('a hashing thread did not hand back its buffer');
  return { sha: hex, data: Buffer.from(buffer, 0, length) };
}

/**
 * Hex sha256 of a pack and of ranges of it ([offset, length], each inside the pack: the caller checks),
 * on a worker thread when the pack is large; `data` must not be used after the call (see hashChunk).
 */
export async function hashPack(data: Buffer, ranges: Array<[number, number]>): Promise<{ sha: string; parts: string[]; data: Buffer }> {
  const length = data.length;
  if (length < POOL_MIN_BYTES || data.byteOffset !== 0 || data.buffer.byteLength !== length || !(data.buffer instanceof ArrayBuffer)) {
    return { sha: sha256(data), parts: ranges.map(([o, n]) => sha256(data.subarray(o, o + n))), data };
  }
  pool ??= new HashPool();
  const { hex, parts, buffer } = await pool.run(data.buffer, 0, length, ranges);
  if (!buffer || !parts) throw new Error('a hashing thread did not hand back its buffer');
  return { sha: hex, parts, data: Buffer.from(buffer, 0, length) };
}
