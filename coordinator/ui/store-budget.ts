import type { Readable } from 'node:stream';
import type { ListOptions, ObjectInfo, Store } from '../../common/ports.js';

/** The time source of the budget (the system clock, or a fake one in tests). */
export interface BudgetClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const systemClock: BudgetClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** Thrown to the lists still waiting when the budget is closed (the server shuts down). */
export class BudgetClosedError extends Error {
  constructor() {
    super('the dashboard is shutting down');
    this.name = 'BudgetClosedError';
  }
}

interface Waiting {
  prefix: string;
  options: ListOptions;
  result: Promise<ObjectInfo[]>;
  resolve(objects: ObjectInfo[]): void;
  reject(e: unknown): void;
}

/**
 * A Store for the dashboard's server: at most one `list` is started per `intervalMs` (1 s) for the
 * whole server, however many tabs are open, because on S3 a listing is what looking costs (a page
 * of 1,000 keys per request). Lists wait in a FIFO queue; a list identical to one queued or under
 * way (same prefix and startAfter) shares its answer instead of costing another. Reads and writes
 * of single objects pass through: the callers read only the runs on screen.
 */
export class BudgetedStore implements Store {
  private readonly queue: Waiting[] = [];
  /** Lists started and not yet answered, by their identity, for coalescing. */
  private readonly inFlight = new Map<string, Promise<ObjectInfo[]>>();
  private nextAtMs = -Infinity;
  private timer: unknown = undefined;
  private closed = false;
  /** How many lists reached the wrapped store, for the server's log and the tests. */
  listsStarted = 0;

  constructor(
    private readonly inner: Store,
    private readonly o: { intervalMs?: number; clock?: BudgetClock } = {},
  ) {}

  private get clock(): BudgetClock {
    return this.o.clock ?? systemClock;
  }

  list(prefix: string, options: ListOptions = {}): Promise<ObjectInfo[]> {
    if (this.closed) return Promise.reject(new BudgetClosedError());
    const id = `${prefix}\u0000${options.startAfter ?? ''}`;
    const same = this.inFlight.get(id) ?? this.queue.find((w) => `${w.prefix}\u0000${w.options.startAfter ?? ''}` === id)?.result;
    if (same) return same;
    let resolve!: (objects: ObjectInfo[]) => void;
    let reject!: (e: unknown) => void;
    const result = new Promise<ObjectInfo[]>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.queue.push({ prefix, options, result, resolve, reject });
    this.pump();
    return result;
  }

  /** Rejects the lists still waiting and stops the timer; lists under way finish. */
  close(): void {
    this.closed = true;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    for (const w of this.queue.splice(0)) w.reject(new BudgetClosedError());
  }

  /** Starts the next list if the budget allows, else arms one timer for when it will. */
  private pump(): void {
    if (this.timer !== undefined || this.queue.length === 0) return;
    const waitMs = this.nextAtMs - this.clock.now();
    if (waitMs > 0) {
      this.timer = this.clock.setTimeout(() => {
        this.timer = undefined;
        this.pump();
      }, waitMs);
      return;
    }
    const w = this.queue.shift();
    if (!w) return;
    this.nextAtMs = this.clock.now() + (this.o.intervalMs ?? 1000);
    this.listsStarted += 1;
    const id = `${w.prefix}\u0000${w.options.startAfter ?? ''}`;
    this.inFlight.set(id, w.result);
    this.inner.list(w.prefix, w.options).then(
      (objects) => {
        this.inFlight.delete(id);
        w.resolve(objects);
      },
      (e: unknown) => {
        this.inFlight.delete(id);
        w.reject(e);
      },
    );
    this.pump();
  }

  put(key: string, data: Buffer | string, options?: { ifAbsent?: boolean }): Promise<void> {
    return this.inner.put(key, data, options);
  }

  head(key: string): Promise<ObjectInfo | undefined> {
    return this.inner.head(key);
  }

  get(key: string): Promise<Buffer | undefined> {
    return this.inner.get(key);
  }

  putStream(key: string, body: Readable, options?: { sizeBytes?: number }): Promise<void> {
    return this.inner.putStream(key, body, options);
  }

  getStream(key: string): Promise<Readable> {
    return this.inner.getStream(key);
  }

  delete(keys: string[]): Promise<void> {
    return this.inner.delete(keys);
  }

  touch(key: string): Promise<boolean> {
    return this.inner.touch(key);
  }
}
