import { createClock, type TimerId } from '@sinonjs/fake-timers';
import type { Clock } from '../../agent/lease.js';

/** Lets promise callbacks and I/O scheduled so far run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}

/**
 * A hand-driven clock for the Lease, on a @sinonjs/fake-timers clock that is not installed globally
 * (mocha, fs and the rest keep real timers): time moves only in `tickAsync` and `jump`.
 */
export class FakeClock implements Clock {
  private readonly clock = createClock(1_000_000);

  now = (): number => this.clock.now;

  setTimeout = (fn: () => void, ms: number): unknown => this.clock.setTimeout(fn, ms);

  clearTimeout = (handle: unknown): void => this.clock.clearTimeout(handle as TimerId);

  /**
   * Moves time on by `ms` without running timers: what a process frozen for `ms` (SIGSTOP, swap)
   * reads from its clock when it wakes, before any of its timers has had a turn. fake-timers'
   * setSystemTime moves pending timers by `ms` too (its own `jump` would run them at once).
   */
  jump(ms: number): void {
    this.clock.setSystemTime(this.clock.now + ms);
  }

  /**
   * Advances by `ms`, running each timer due by then at its time, and between two timers letting
   * promises and real I/O settle for several setImmediate rounds (fake-timers' own tickAsync gives
   * one). A marker timer armed at the end sorts after every timer already due then, so when
   * `next()` runs it, nothing due by `end` is left.
   */
  async tickAsync(ms: number): Promise<void> {
    const end = this.clock.now + ms;
    for (;;) {
      await settle();
      let reachedEnd = false;
      const marker = this.clock.setTimeout(() => (reachedEnd = true), end - this.clock.now);
      this.clock.next();
      if (reachedEnd) break;
      this.clock.clearTimeout(marker);
    }
    await settle();
  }
}
