import { availableParallelism } from 'node:os';
import { Worker, type Transferable } from 'node:worker_threads';

/** One thread of a pool, with what the caller remembers having sent it (shared buffers, by number). */
export interface PoolThread {
  readonly known: Set<number>;
}

/** Numbers for shared buffers (the chunk slots), so that each is sent to a thread only once. */
const sharedIds = new WeakMap<SharedArrayBuffer, number>();
let nextShared = 0;

/**
 * The message fields that give a thread `buffer`: its number, and the buffer itself only the first
 * time this thread sees it (a thread keeps the shared buffers it was given, by number).
 */
export function sharedBuffer(thread: PoolThread, buffer: SharedArrayBuffer): { shared: number; buffer?: SharedArrayBuffer } {
  let shared = sharedIds.get(buffer);
  if (shared === undefined) sharedIds.set(buffer, (shared = nextShared++));
  if (thread.known.has(shared)) return { shared };
  thread.known.add(shared);
  return { shared, buffer };
}

interface Slot extends PoolThread {
  worker: Worker;
  busy: Map<number, { resolve: (r: unknown) => void; reject: (e: Error) => void }>;
}

/** One thread per core, at most 4. */
export const ALL_CORES = Math.max(1, Math.min(4, availableParallelism()));

/**
 * A few worker threads (`size`) running `source`: each message carries an `id`, and the thread
 * answers with a message of the same `id`. A task goes to the least busy thread. Threads start on the
 * first task and do not keep the process alive while idle. A thread that dies fails its tasks once it
 * has exited (its writes in flight have ended by then), and the next task starts a new one. The code
 * is a string because the CLI and the agent are esbuild bundles: a worker cannot load a file of its
 * own from dist/.
 */
export class WorkerPool<Answer> {
  private slots: Slot[] = [];
  private nextId = 0;

  constructor(
    private readonly source: string,
    private readonly size: number = ALL_CORES,
  ) {}

  private slot(): Slot {
    if (this.slots.length >= this.size) return this.slots.reduce((a, b) => (b.busy.size < a.busy.size ? b : a));
    const worker = new Worker(this.source, { eval: true });
    const slot: Slot = { worker, busy: new Map(), known: new Set() };
    worker.unref();
    worker.on('message', (m: { id: number }) => {
      const task = slot.busy.get(m.id);
      slot.busy.delete(m.id);
      if (slot.busy.size === 0) worker.unref();
      task?.resolve(m);
    });
    // Only the error's name: a fetching thread's error may quote what it was given (a signed URL).
    let failure = '';
    worker.on('error', (e) => {
      failure = `: ${e.name}`;
      this.slots = this.slots.filter((s) => s !== slot);
    });
    worker.on('exit', (code) => {
      this.slots = this.slots.filter((s) => s !== slot);
      const e = new Error(`a worker thread stopped (exit code ${code}${failure})`);
      for (const task of slot.busy.values()) task.reject(e);
      slot.busy.clear();
    });
    this.slots.push(slot);
    return slot;
  }

  /**
   * Sends the message `build` makes for the chosen thread (it may look at and add to what the thread
   * knows), with `transfer` moved rather than copied, and resolves to the thread's answer. When
   * `signal` aborts, the thread is sent `{ id, abort: true }`; the task still ends with its answer.
   */
  run(build: (thread: PoolThread) => { message: object; transfer?: Transferable[] }, signal?: AbortSignal): Promise<Answer> {
    const slot = this.slot();
    const id = this.nextId++;
    const { message, transfer } = build(slot);
    const abort = (): void => slot.worker.postMessage({ id, abort: true });
    return new Promise<Answer>((resolve, reject) => {
      const done = (): void => signal?.removeEventListener('abort', abort);
      slot.busy.set(id, { resolve: (r) => (done(), resolve(r as Answer)), reject: (e) => (done(), reject(e)) });
      slot.worker.ref();
      slot.worker.postMessage({ ...message, id }, transfer ?? []);
      if (signal?.aborted) abort();
      else signal?.addEventListener('abort', abort, { once: true });
    });
  }
}
