import { sha256 } from '../hash.js';
import { WorkerPool, sharedBuffer } from './worker-pool.js';

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

/**
 * Worker threads that hash large buffers in parallel. The buffer's memory is moved to the thread and
 * back (no copy), and meanwhile the caller must not touch it; a shared buffer is sent once per thread.
 */
class HashPool {
  private readonly threads = new WorkerPool<Hashed>(WORKER_SOURCE);

  /** Hashes bytes of a buffer: an ArrayBuffer is moved there and back; a SharedArrayBuffer is read in place. */
  run(buffer: ArrayBuffer | SharedArrayBuffer, offset: number, length: number, parts?: Array<[number, number]>): Promise<Hashed> {
    return this.threads.run((thread) => {
      if (!(buffer instanceof SharedArrayBuffer)) return { message: { buffer, offset, length, parts }, transfer: [buffer] };
      return { message: { ...sharedBuffer(thread, buffer), offset, length } };
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
