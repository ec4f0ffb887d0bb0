import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LeaseLostError, TransportError } from '../../common/errors.js';
import { jsonLogger } from '../../common/log.js';
import { Lease } from '../../agent/lease.js';
import { FakeClock } from '../support/fake-clock.js';
import { removeAll, tempDir, waitFor } from '../support/cli.js';

/** A queue and a Store heartbeat whose failures the test turns on and off. */
function harness(visibilityMs: number, heartbeatMs: number) {
  const clock = new FakeClock();
  const dir = tempDir('lease');
  const calls = { extend: 0, heartbeat: 0 };
  const faults: { extend?: () => Promise<void>; heartbeat?: () => Promise<void> } = {};
  const lines: string[] = [];
  const lease = new Lease({
    queue: {
      extend: () => {
        calls.extend++;
        return faults.extend ? faults.extend() : Promise.resolve();
      },
    },
    receipt: 'r1',
    visibilityMs,
    heartbeatMs,
    writeHeartbeat: () => {
      calls.heartbeat++;
      return faults.heartbeat ? faults.heartbeat() : Promise.resolve();
    },
    deadlineFile: join(dir, 'job.deadline'),
    log: jsonLogger((l) => lines.push(l), { agentId: 'a1' }),
    clock,
  });
  const deadlineInFile = (): number => Number(readFileSync(join(dir, 'job.deadline'), 'utf8'));
  return { clock, lease, calls, faults, lines, dir, deadlineInFile };
}

describe('Lease', () => {
  const dirs: string[] = [];
  afterEach(() => removeAll(...dirs.splice(0)));

  it('extends the queue lease and writes the Store heartbeat every heartbeatMs, and moves the deadline file on', async () => {
    const h = harness(3000, 1000);
    dirs.push(h.dir);
    await h.lease.start();
    const first = h.deadlineInFile();
    await h.clock.tickAsync(3500);
    expect(h.calls).to.deep.equal({ extend: 3, heartbeat: 3 });
    expect(h.lease.signal.aborted).to.equal(false);
    // The file follows the last proof (written off the beat's path).
    await waitFor(() => (h.deadlineInFile() === first + 3000 ? true : undefined), 2000, 'the deadline file');
    expect(h.lease.deadlineMs).to.equal(first + 3000);
    await h.lease.stop();
  });

  it('a Store heartbeat that keeps failing is retried, then aborts the job before the lease runs out', async () => {
    const h = harness(3000, 1000);
    dirs.push(h.dir);
    h.faults.heartbeat = () => Promise.reject(new TransportError('PutObject: ServiceUnavailable (HTTP 503)', { retryable: true }));
    await h.lease.start();
    const deadline = h.lease.deadlineMs;
    await h.clock.tickAsync(deadline - h.clock.now() - 1);
    expect(h.lease.signal.aborted).to.equal(false);
    expect(h.calls.heartbeat).to.be.greaterThan(2);
    await h.clock.tickAsync(1);
    expect(h.lease.signal.aborted).to.equal(true);
    expect(h.lease.signal.reason).to.be.instanceOf(LeaseLostError);
    // Before the queue would hand the job to another agent.
    expect(h.clock.now()).to.be.below(1_000_000 + 3000);
    await h.lease.stop();
  });

  it('a 4 s S3 and SQS outage inside a 30 s lease is retried and the job keeps running', async () => {
    const h = harness(30_000, 10_000);
    dirs.push(h.dir);
    await h.lease.start();
    await h.clock.tickAsync(9_000);
    const outage = (): Promise<void> => Promise.reject(new TransportError('ECONNRESET', { retryable: true }));
    h.faults.extend = outage;
    h.faults.heartbeat = outage;
    await h.clock.tickAsync(4_000);
    expect(h.lines.some((l) => l.includes('could not extend the lease'))).to.equal(true);
    delete h.faults.extend;
    delete h.faults.heartbeat;
    await h.clock.tickAsync(60_000);
    expect(h.lease.signal.aborted).to.equal(false);
    expect(h.lease.deadlineMs).to.be.greaterThan(h.clock.now());
    await h.lease.stop();
  });

  it('a LeaseLostError from the queue aborts at once', async () => {
    const h = harness(3000, 1000);
    dirs.push(h.dir);
    h.faults.extend = () => Promise.reject(new LeaseLostError('receipt expired'));
    await h.lease.start();
    await h.clock.tickAsync(1000);
    expect(h.lease.signal.aborted).to.equal(true);
    expect((h.lease.signal.reason as Error).message).to.equal('receipt expired');
    await h.lease.stop();
  });

  it('an extend that hangs aborts the job when the proven time runs out', async () => {
    const h = harness(3000, 1000);
    dirs.push(h.dir);
    h.faults.extend = () => new Promise<void>(() => undefined);
    await h.lease.start();
    await h.clock.tickAsync(2399);
    expect(h.lease.signal.aborted).to.equal(false);
    await h.clock.tickAsync(1);
    expect(h.lease.signal.aborted).to.equal(true);
    await h.lease.stop();
  });

  it('after a freeze past the lease, confirm() says the job is no longer held, so it is not settled', async () => {
    const h = harness(3000, 1000);
    dirs.push(h.dir);
    await h.lease.start();
    await h.clock.tickAsync(1500);
    h.clock.jump(9000);
    expect(await h.lease.confirm()).to.equal(false);
    expect(h.lease.signal.aborted).to.equal(true);
    await h.lease.stop();
  });
  it('confirm() retries a transient failure while the lease lasts', async () => {
    const h = harness(3000, 1000);
    dirs.push(h.dir);
    await h.lease.start();
    let fails = 2;
    h.faults.extend = () => (fails-- > 0 ? Promise.reject(new TransportError('ECONNRESET', { retryable: true })) : Promise.resolve());
    const confirmed = h.lease.confirm();
    await h.clock.tickAsync(1000);
    expect(await confirmed).to.equal(true);
    expect(h.lease.signal.aborted).to.equal(false);
    await h.lease.stop();
  });
  it('a proof still under way when the lease is stopped re-arms nothing: no "lease lost" after the job ended', async () => {
    const h = harness(3000, 1000);
    dirs.push(h.dir);
    let finish: () => void = () => undefined;
    h.faults.extend = () => new Promise<void>((resolve) => (finish = resolve));
    await h.lease.start();
    // The beat at 1 s starts a proof that is still waiting on the queue when the job ends.
    await h.clock.tickAsync(1000);
    expect(h.calls.extend).to.equal(1);
    await h.lease.stop();
    finish();
    await h.clock.tickAsync(10_000);
    expect(h.lease.signal.aborted).to.equal(false);
    expect(h.lines.filter((l) => l.includes('lease lost'))).to.deep.equal([]);
  });
  it('confirm() does not hang on an extend that hangs: it says no when the lease runs out', async () => {
    const h = harness(3000, 1000);
    dirs.push(h.dir);
    await h.lease.start();
    h.faults.extend = () => new Promise<void>(() => undefined);
    const confirmed = h.lease.confirm();
    await h.clock.tickAsync(2400);
    expect(await confirmed).to.equal(false);
    await h.lease.stop();
  });
});
