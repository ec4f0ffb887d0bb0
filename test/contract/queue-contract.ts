import { expect } from 'chai';
import { LeaseLostError } from '../../common/errors.js';
import type { Queue } from '../../common/ports.js';

export interface QueueFixture {
  queue: Queue;
  /** A second handle on the same queue, as another process would have. */
  reopen(): Queue;
  cleanup(): Promise<void>;
}

/** The Queue contract: every implementation must pass it. `maxReceives` is 2 for the fixture. */
export function queueContract(name: string, make: () => Promise<QueueFixture>): void {
  describe(`Queue contract: ${name}`, function () {
    this.timeout(20_000);
    let fx: QueueFixture;
    beforeEach(async () => {
      fx = await make();
    });
    afterEach(async () => {
      await fx.cleanup();
    });

    it('delivers a sent message once, with receiveCount 1, and ack removes it', async () => {
      await fx.queue.send('hello');
      const m = await fx.queue.receive({ waitMs: 2000, visibilityMs: 5000 });
      expect(m?.body).to.equal('hello');
      expect(m?.receiveCount).to.equal(1);
      expect(await fx.queue.receive({ waitMs: 0, visibilityMs: 5000 })).to.equal(undefined);
      await fx.queue.ack(m!.receipt);
      expect(await fx.queue.counts()).to.deep.include({ visible: 0, inFlight: 0 });
    });

    it('returns undefined after waiting when the queue is empty', async () => {
      const start = Date.now();
      expect(await fx.queue.receive({ waitMs: 1000, visibilityMs: 5000 })).to.equal(undefined);
      expect(Date.now() - start).to.be.at.least(900);
    });

    it('wakes a waiting receiver when a message arrives', async () => {
      const waiting = fx.queue.receive({ waitMs: 5000, visibilityMs: 5000 });
      await new Promise((r) => setTimeout(r, 200));
      await fx.reopen().send('late');
      const m = await waiting;
      expect(m?.body).to.equal('late');
    });

    it('redelivers after the visibility timeout, counting receives; the new holder can ack', async () => {
      await fx.queue.send('job');
      const first = await fx.queue.receive({ waitMs: 2000, visibilityMs: 1000 });
      expect(first?.receiveCount).to.equal(1);
      const second = await fx.reopen().receive({ waitMs: 4000, visibilityMs: 5000 });
      expect(second?.body).to.equal('job');
      expect(second?.receiveCount).to.equal(2);
      // SQS may accept a stale receipt without effect; a transport may also refuse it as lost.
      // Either way the job's exclusivity comes from the Store (live holder check, one final status).
      let lost: unknown;
      await fx.queue.ack(first!.receipt).catch((e: unknown) => (lost = e));
      if (lost !== undefined) expect(lost).to.be.instanceOf(LeaseLostError);
      await fx.queue.ack(second!.receipt).catch((e: unknown) => expect(e).to.be.instanceOf(LeaseLostError));
      expect(await fx.queue.receive({ waitMs: 0, visibilityMs: 1000 })).to.equal(undefined);
    });

    it('keeps a message hidden while its holder extends the lease', async () => {
      await fx.queue.send('long');
      const m = await fx.queue.receive({ waitMs: 2000, visibilityMs: 1000 });
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 600));
        await fx.queue.extend(m!.receipt, 1000);
      }
      expect(await fx.reopen().receive({ waitMs: 0, visibilityMs: 1000 })).to.equal(undefined);
      await fx.queue.ack(m!.receipt);
    });

    it('release makes the message visible again at once', async () => {
      await fx.queue.send('give back');
      const m = await fx.queue.receive({ waitMs: 2000, visibilityMs: 30_000 });
      await fx.queue.release(m!.receipt);
      const again = await fx.reopen().receive({ waitMs: 2000, visibilityMs: 5000 });
      expect(again?.body).to.equal('give back');
      await fx.queue.ack(again!.receipt);
    });

    it('defer parks a message without counting the delivery', async () => {
      await fx.queue.send('parked');
      const m = await fx.queue.receive({ waitMs: 2000, visibilityMs: 30_000 });
      await fx.queue.defer(m!.receipt, 1000);
      expect(await fx.queue.receive({ waitMs: 0, visibilityMs: 5000 })).to.equal(undefined);
      const again = await fx.reopen().receive({ waitMs: 4000, visibilityMs: 5000 });
      expect(again?.body).to.equal('parked');
      expect(again?.receiveCount).to.equal(1);
      await fx.queue.ack(again!.receipt);
    });

    it('moves a message to the dead-letter queue after maxReceives deliveries', async () => {
      await fx.queue.send('poison');
      for (let i = 1; i <= 2; i++) {
        const m = await fx.queue.receive({ waitMs: 3000, visibilityMs: 1000 });
        expect(m?.receiveCount).to.equal(i);
      }
      await new Promise((r) => setTimeout(r, 1100));
      expect(await fx.queue.receive({ waitMs: 1500, visibilityMs: 1000 })).to.equal(undefined);
      expect((await fx.queue.counts()).dead).to.equal(1);
    });

    it('deadLetter moves a held message to the dead-letter queue at once', async () => {
      await fx.queue.send('given up');
      const m = await fx.queue.receive({ waitMs: 2000, visibilityMs: 30_000 });
      await fx.queue.deadLetter(m!.receipt);
      expect(await fx.reopen().receive({ waitMs: 1500, visibilityMs: 1000 })).to.equal(undefined);
      expect(await fx.queue.counts()).to.include({ visible: 0, inFlight: 0, dead: 1 });
    });

    it('a receiver already waiting gets a released message within seconds', async () => {
      await fx.queue.send('handed back');
      const m = await fx.queue.receive({ waitMs: 2000, visibilityMs: 60_000 });
      const other = fx.reopen();
      const t0 = Date.now();
      const waiting = other.receive({ waitMs: 20_000, visibilityMs: 5000 });
      await new Promise((r) => setTimeout(r, 500));
      await fx.queue.release(m!.receipt);
      const again = await waiting;
      expect(again?.body).to.equal('handed back');
      expect(Date.now() - t0).to.be.below(8000);
      await other.ack(again!.receipt);
    });

    it('gives each message to one of several concurrent receivers', async () => {
      const n = 20;
      await Promise.all(Array.from({ length: n }, (_, i) => fx.queue.send(`m${i}`)));
      const got: string[] = [];
      const worker = async (q: Queue): Promise<void> => {
        for (;;) {
          const m = await q.receive({ waitMs: 500, visibilityMs: 10_000 });
          if (!m) return;
          got.push(m.body);
          await q.ack(m.receipt);
        }
      };
      await Promise.all([worker(fx.queue), worker(fx.reopen()), worker(fx.reopen()), worker(fx.reopen())]);
      expect(got.sort()).to.deep.equal(Array.from({ length: n }, (_, i) => `m${i}`).sort());
    });

    it('keeps messages for a new handle (durable)', async () => {
      await fx.queue.send('persisted');
      const m = await fx.reopen().receive({ waitMs: 2000, visibilityMs: 5000 });
      expect(m?.body).to.equal('persisted');
    });
  });
}
