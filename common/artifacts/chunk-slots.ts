import { CHUNK_BYTES } from './manifest.js';

/** Chunk buffers in the whole process, across all saves and restores: what bounds their memory (48 MiB). */
export const CHUNK_SLOTS = 6;

/**
 * A fixed set of CHUNK_BYTES buffers, over shared memory that the hashing threads keep, reused for
 * every large chunk: allocating (and collecting) a fresh 8 MiB buffer per chunk cost a 1 GiB restore
 * close to a second of garbage collection and page faults. `acquire` waits while all are in use.
 */
class ChunkSlots {
  private readonly free: Buffer[] = [];
  private made = 0;
  private readonly waiting: Array<(b: Buffer) => void> = [];

  acquire(): Promise<Buffer> {
    const b = this.free.pop();
    if (b) return Promise.resolve(b);
    if (this.made < CHUNK_SLOTS) {
      this.made++;
      return Promise.resolve(Buffer.from(new SharedArrayBuffer(CHUNK_BYTES)));
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release(b: Buffer): void {
    const next = this.waiting.shift();
    if (next) next(b);
    else this.free.push(b);
  }
}

const slots = new ChunkSlots();

/**
 * One of the process's chunk buffers (CHUNK_BYTES long), waiting while all are in use; give it back
 * with releaseChunkBuffer once its bytes are no longer needed, whatever happens.
 */
export const acquireChunkBuffer = (): Promise<Buffer> => slots.acquire();

export const releaseChunkBuffer = (buf: Buffer): void => slots.release(buf);

/** Runs `fn` with one of the process's chunk buffers, and gives it back after. */
export async function withChunkBuffer<T>(fn: (buf: Buffer) => Promise<T>): Promise<T> {
  const buf = await slots.acquire();
  try {
    return await fn(buf);
  } finally {
    slots.release(buf);
  }
}
