import { expect } from 'chai';
import { LocalStore } from '../../common/local/local-store.js';
import type { AgentInfo, Queue, QueueCounts } from '../../common/ports.js';
import type { SecretStore } from '../../common/secrets.js';
import { rememberProfile } from '../../coordinator/fleet.js';
import { costApi } from '../../coordinator/ui/api-cost.js';
import { machinesApi } from '../../coordinator/ui/api-machines.js';
import { servicesApi } from '../../coordinator/ui/api-services.js';
import { RunCache } from '../../coordinator/ui/run-cache.js';
import { removeAll, tempDir } from '../support/cli.js';
import { CountingStore, GPU_PLACEMENT, attemptOf, seedAttempt, seedEnd, seedRun } from '../support/ui-data.js';

const REPO = 'github.com/acme/train';
const NOW = Date.parse('2026-11-25T12:00:00.000Z');
const iso = (ms: number): string => new Date(ms).toISOString();
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

function queueWith(counts: QueueCounts): Queue {
  const no = (): never => {
    throw new Error('not used');
  };
  return { counts: async () => counts, send: no, receive: no, extend: no, ack: no, release: no, defer: no, deadLetter: no };
}

describe('ui data APIs: machines, cost and services', () => {
  let dir: string;
  let store: CountingStore;
  let cache: RunCache;

  beforeEach(async () => {
    dir = tempDir('ui-api');
    store = new CountingStore(new LocalStore(dir));
    cache = new RunCache({ store, repoId: REPO, tickMs: 86_400_000, clock: { now: () => NOW, setTimeout: () => undefined, clearTimeout: () => undefined } });
  });
  afterEach(() => {
    cache.stop();
    removeAll(dir);
  });

  it('machines: each agent with the heartbeat, instance and price of the job it runs; queue depth per profile; the cost rate', async () => {
    await rememberProfile({ store }, GPU_PLACEMENT);
    await rememberProfile({ store }, { profileId: 'default', offers: [] });
    const r = await seedRun(store, REPO, { runName: 'busy-run-1', submittedAt: iso(NOW - HOUR), placement: GPU_PLACEMENT });
    await seedAttempt(store, REPO, r.runName, { ...attemptOf(1, iso(NOW - HOUR), { instance: { id: 'i-aaa', type: 'g5.xlarge', market: 'spot' } }), agentId: 'i-aaa', heartbeatAt: iso(NOW - 7000) });
    const agents: AgentInfo[] = [
      { id: 'i-aaa', location: 'g5.xlarge in us-east-1a', state: 'running', profileId: 'gpu' },
      { id: 'i-bbb', location: 'g5.xlarge in us-east-1b', state: 'starting', profileId: 'gpu' },
    ];
    const queues: Record<string, Queue> = { gpu: queueWith({ visible: 3, inFlight: 1, dead: 0 }), default: queueWith({ visible: 0, inFlight: 0, dead: 2 }) };
    const json = await machinesApi({ store, compute: { listAgents: async () => agents }, queueFor: async (p) => queues[p] ?? queueWith({ visible: 0, inFlight: 0, dead: 0 }), runs: cache, now: () => NOW });
    expect(json).to.deep.equal({
      agents: [
        { id: 'i-aaa', location: 'g5.xlarge in us-east-1a', state: 'running', profileId: 'gpu', heartbeatAgeMs: 7000, instanceType: 'g5.xlarge', market: 'spot', pricePerHour: 0.5 },
        { id: 'i-bbb', location: 'g5.xlarge in us-east-1b', state: 'starting', profileId: 'gpu', heartbeatAgeMs: null, instanceType: null, market: null, pricePerHour: null },
      ],
      queues: [
        { profileId: 'default', depth: 0 },
        { profileId: 'gpu', depth: 4 },
      ],
      costRatePerHour: 0.5,
    });
  });

  it('cost: USD per day and workflow over the last days, from the index alone', async () => {
    const runs: Array<[string, string, number, number]> = [
      // name, workflow, ended this many days ago, hours on spot at $0.50
      ['a-run-1', 'train', 0, 2],
      ['b-run-1', 'train', 0, 1],
      ['c-run-1', 'eval', 1, 4],
      ['d-run-1', 'train', 29, 1],
      ['e-run-1', 'train', 30, 10],
    ];
    for (const [runName, workflow, daysAgo, hours] of runs) {
      const end = NOW - daysAgo * DAY;
      const record = await seedRun(store, REPO, { runName, workflow, submittedAt: iso(end - hours * HOUR), placement: GPU_PLACEMENT });
      const a = attemptOf(1, iso(end - hours * HOUR), { endedAt: iso(end), instance: { id: `i-${runName}`, type: 'g5.xlarge', market: 'spot' } });
      await seedEnd(store, REPO, record, [a], { status: 'done', exitCode: 0, reason: null, finishedAt: iso(end), attempt: 1 });
    }
    // A local run: no price, no cost.
    const local = await seedRun(store, REPO, { runName: 'f-run-1', submittedAt: iso(NOW - HOUR) });
    await seedEnd(store, REPO, local, [attemptOf(1, iso(NOW - HOUR), { endedAt: iso(NOW) })], { status: 'done', exitCode: 0, reason: null, finishedAt: iso(NOW), attempt: 1 });
    store.reset();
    const json = await costApi({ runs: cache, now: () => NOW }, new URLSearchParams('days=30'));
    expect(store.gets).to.deep.equal([]);
    expect(json.days).to.have.length(30);
    expect(json.days[0]).to.deep.equal({ day: '2026-10-27', byWorkflow: { train: 0.5 } });
    expect(json.days[28]).to.deep.equal({ day: '2026-11-24', byWorkflow: { eval: 2 } });
    expect(json.days[29]).to.deep.equal({ day: '2026-11-25', byWorkflow: { train: 1.5 } });
    expect(json.days.slice(1, 28).every((d) => Object.keys(d.byWorkflow).length === 0)).to.equal(true);
    expect(json.total).to.equal(4);
    expect((await costApi({ runs: cache, now: () => NOW }, new URLSearchParams('days=2'))).total).to.equal(3.5);
    expect((await costApi({ runs: cache, now: () => NOW }, new URLSearchParams('days=nonsense'))).days).to.have.length(30);
  });

  it('services: the links of running runs, with the dev environment token only for its owner', async () => {
    const service = { ports: [{ port: 8080, open: true }, { port: 8081, open: false }], server: { provider: 'code' as const, port: 9000, path: '/', tokenParam: 'tkn', ready: true } };
    for (const [runName, owner] of [['mine-run-1', 'alice@box'], ['theirs-run-1', 'bob@box']] as const) {
      const r = await seedRun(store, REPO, { runName, submittedAt: iso(NOW - HOUR), owner });
      await seedAttempt(store, REPO, r.runName, { ...attemptOf(1, iso(NOW - HOUR), { leaseMs: 10 * DAY }), service });
    }
    const secrets: Pick<SecretStore, 'get'> = { get: async (scope) => `token-of-${scope.runName ?? ''}` };
    const json = await servicesApi({ runs: cache, owner: async () => 'alice@box', secrets: secrets as SecretStore });
    expect(json.services).to.deep.equal([
      { runName: 'mine-run-1', workflow: 'train', provider: 'code', url: 'http://127.0.0.1:9000/?tkn=token-of-mine-run-1', port: 9000 },
      { runName: 'mine-run-1', workflow: 'train', provider: 'port', url: 'http://127.0.0.1:8080', port: 8080 },
      // Another owner's dev environment: shown as theirs, without its token.
      { runName: 'theirs-run-1', workflow: 'train', provider: 'code', url: "(bob@box's)", port: 9000 },
      { runName: 'theirs-run-1', workflow: 'train', provider: 'port', url: 'http://127.0.0.1:8080', port: 8080 },
    ]);
  });
});
