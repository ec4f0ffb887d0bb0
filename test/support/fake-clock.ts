import type { Clock } from '../../agent/lease.js';

/** Lets promise callbacks and I/O scheduled so far run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}

/** A hand-driven clock for the Lease: time moves only in `tickAsync`, which runs due timers in order. */
export class FakeClock implements Clock {
  private t = 1_000_000;
  private nextId = 1;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  now = (): number => this.t;

  setTimeout = (fn: () => void, ms: number): unknown => {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  };

  clearTimeout = (handle: unknown): void => {
    if (typeof handle === 'number') this.timers.delete(handle);
  };

  /** Moves time on without running timers: what a process frozen for `ms` (SIGSTOP, swap) sees when it wakes. */
  jump(ms: number): void {
    this.t += ms;
  }

  /** Advances by `ms`, running each timer at its time and letting promises settle after each. */
  async tickAsync(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await settle();
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.timers) if (entry[1].at <= end && (!next || entry[1].at < next[1].at)) next = entry;
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
    await settle();
  }
}
