import { expect } from 'chai';
import type { Compute } from '../../common/ports.js';

export interface ComputeFixture {
  compute: Compute;
  maxAgents: number;
  /** Makes one running agent disappear, as a crash or a reclaimed instance would. */
  loseAgent(): Promise<void>;
  cleanup(): Promise<void>;
}

/** The Compute contract: capacity follows demand up to the maximum, and lost agents are replaced. */
export function computeContract(name: string, make: () => Promise<ComputeFixture>): void {
  describe(`Compute contract: ${name}`, function () {
    this.timeout(20_000);
    let fx: ComputeFixture;
    beforeEach(async () => {
      fx = await make();
    });
    afterEach(async () => {
      await fx.cleanup();
    });
    const need = async (backlog: number): Promise<void> => {
      const placement = await fx.compute.plan({ interruptible: false, local: false });
      await fx.compute.ensureCapacity([{ placement, backlog }]);
    };

    it('starts nothing without demand', async () => {
      await need(0);
      expect(await fx.compute.listAgents()).to.deep.equal([]);
    });

    it('starts one agent per pending job, up to the maximum, and no more on a repeat', async () => {
      await need(1);
      expect(await fx.compute.listAgents()).to.have.length(1);
      await need(fx.maxAgents + 5);
      expect(await fx.compute.listAgents()).to.have.length(fx.maxAgents);
      await need(fx.maxAgents + 5);
      expect(await fx.compute.listAgents()).to.have.length(fx.maxAgents);
    });

    it('does not overshoot when several callers ensure capacity at once', async () => {
      await Promise.all(Array.from({ length: 5 }, () => need(fx.maxAgents)));
      expect(await fx.compute.listAgents()).to.have.length(fx.maxAgents);
    });

    it('replaces a lost agent while jobs are pending', async () => {
      await need(1);
      await fx.loseAgent();
      expect(await fx.compute.listAgents()).to.have.length(0);
      await need(1);
      expect(await fx.compute.listAgents()).to.have.length(1);
    });
  });
}
