import { expect } from 'chai';
import { DescribeInstancesCommand, EC2Client } from '@aws-sdk/client-ec2';
import { mockClient } from 'aws-sdk-client-mock';
import { PricingClient } from '@aws-sdk/client-pricing';
import { Ec2Catalog } from '../../common/aws/ec2-catalog.js';
import { Ec2Fleet } from '../../common/aws/ec2-fleet.js';
import type { Queue, QueueCounts } from '../../common/ports.js';
import type { RunView } from '../../common/runs.js';
import { LocalStore } from '../../common/local/local-store.js';
import { rememberProfile } from '../../coordinator/fleet.js';
import { machinesApi } from '../../coordinator/ui/api-machines.js';
import { removeAll, tempDir } from '../support/cli.js';
import { CountingStore, GPU_PLACEMENT } from '../support/ui-data.js';

function queueWith(counts: QueueCounts): Queue {
  const no = (): never => {
    throw new Error('not used');
  };
  return { counts: async () => counts, send: no, receive: no, extend: no, ack: no, release: no, defer: no, deadLetter: no };
}

describe('ui machines: an idle EC2 instance shows its type, market and price', () => {
  let dir = '';
  afterEach(() => removeAll(dir));

  it('from the fleet listing (InstanceType, InstanceLifecycle), priced by its profile, and counted in the cost rate', async () => {
    const credentials = { accessKeyId: 'x', secretAccessKey: 'x' };
    const client = new EC2Client({ region: 'us-east-1', credentials });
    const ec2 = mockClient(client);
    ec2.on(DescribeInstancesCommand).resolves({
      Reservations: [
        {
          Instances: [
            { InstanceId: 'i-idle', InstanceType: 'g5.xlarge', InstanceLifecycle: 'spot', State: { Name: 'running', Code: 16 }, Placement: { AvailabilityZone: 'us-east-1a' }, Tags: [{ Key: 'dstack:profile', Value: GPU_PLACEMENT.profileId }] },
            { InstanceId: 'i-od', InstanceType: 'g5.xlarge', State: { Name: 'pending', Code: 0 }, Placement: { AvailabilityZone: 'us-east-1b' }, Tags: [{ Key: 'dstack:profile', Value: GPU_PLACEMENT.profileId }] },
            { InstanceId: 'i-other', InstanceType: 'g5.xlarge', State: { Name: 'running', Code: 16 }, Placement: { AvailabilityZone: 'us-east-1b' }, Tags: [{ Key: 'dstack:profile', Value: 'other' }] },
          ],
        },
      ],
    });
    const catalog = new Ec2Catalog(client, new PricingClient({ region: 'us-east-1', credentials }), 'us-east-1');
    const fleet = new Ec2Fleet({ ec2: client, catalog, fleet: 'f', maxInstances: 2, userData: () => '' });
    const agents = await fleet.listAgents();
    ec2.restore();
    expect(agents.map((a) => a.instance)).to.deep.equal([
      { type: 'g5.xlarge', market: 'spot' },
      { type: 'g5.xlarge', market: 'on-demand' },
      { type: 'g5.xlarge', market: 'on-demand' },
    ]);
    dir = tempDir('ui-machines-idle');
    const store = new CountingStore(new LocalStore(dir));
    await rememberProfile({ store }, GPU_PLACEMENT);
    const json = await machinesApi({
      store,
      compute: { listAgents: async () => agents },
      queueFor: async () => queueWith({ visible: 0, inFlight: 0, dead: 0 }),
      runs: { liveViews: async (): Promise<RunView[]> => [] },
    });
    const price = (market: string): number | null => GPU_PLACEMENT.offers.find((o) => o.instanceType === 'g5.xlarge' && o.market === market)?.pricePerHour ?? null;
    expect(json.agents.map((a) => [a.id, a.state, a.instanceType, a.market, a.pricePerHour, a.heartbeatAgeMs])).to.deep.equal([
      ['i-idle', 'running', 'g5.xlarge', 'spot', price('spot'), null],
      ['i-od', 'starting', 'g5.xlarge', 'on-demand', price('on-demand'), null],
      // Its profile is not one this repo remembers: its type and market are known, its price is not.
      ['i-other', 'running', 'g5.xlarge', 'on-demand', null, null],
    ]);
    // Only what runs is billed: the instance still starting shows its price and adds nothing yet.
    expect(json.costRatePerHour).to.equal(price('spot'));
  });
});
