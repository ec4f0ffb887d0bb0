import { availableParallelism } from 'node:os';
import { Worker, type Transferable } from 'node:worker_threads';

/** One thread of a pool, with what the caller remembers having sent it (shared buffers, by number). */
export interface PoolThread {
  readonly known: Set<number>;
}

interface Slot extends PoolThread {
  worker: Worker;
  busy: Map<number, { resolve: (r: unknown) => void; reject: (e: Error) => void }>;
}

/**
 * A few worker threads, one per core (at most 4), running `source`: each message carries an `id`, and
 * the thread answers with a message of the same `id`. A task goes to the least busy thread. Threads
 * start on the first task, do not keep the process alive while idle, and a thread that dies fails its
 * tasks and is replaced by the next task. The code is a string because the CLI and the agent are
 * esbuild bundles: a worker cannot load a file of its own from dist/.
 */
export class WorkerPool<Answer> {
  private slots: Slot[] = [];
  private nextId = 0;
  private readonly size = Math.max(1, Math.min(4, availableParallelism()));

  constructor(private readonly source: string) {}

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
    const fail = (e: Error): void => {
      this.slots = this.slots.filter((s) => s !== slot);
      for (const task of slot.busy.values()) task.reject(e);
      slot.busy.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`a worker thread exited (code ${code})`)));
    this.slots.push(slot);
    return slot;
  }

  /**
   * Sends the message `build` makes for the chosen thread (it may look at and add to what the thread
   * knows), with `transfer` moved rather than copied, and resolves to the thread's answer.
   */
  run(build: (thread: PoolThread) => { message: object; transfer?: Transferable[] }): Promise<Answer> {
    const slot = this.slot();
    const id = this.nextId++;
    const { message, transfer } = build(slot);
    return new Promise<Answer>((resolve, reject) => {
      slot.busy.set(id, { resolve: (r) => resolve(r as Answer), reject });
      slot.worker.ref();
      slot.worker.postMessage({ ...message, id }, transfer ?? []);
    });
  }
}
