import { expect } from 'chai';
import { S3Store } from '../../common/aws/s3-store.js';
import { ensureAws } from '../../common/aws/provision.js';
import { awsClients, type AwsSettings } from '../../common/aws/setup.js';
import { endedFacts } from '../../common/run-cost.js';
import { endedKey, submittedKey } from '../../common/run-index.js';
import { runKeys, type FinalRecord } from '../../common/runs.js';
import { costApi } from '../../coordinator/ui/api-cost.js';
import { RunCache } from '../../coordinator/ui/run-cache.js';
import { BudgetedStore } from '../../coordinator/ui/store-budget.js';
import { startEmulator, uniqueName, type Emulator } from '../support/fauxqs.js';
import { S3Proxy, type SeenRequest } from '../support/s3-proxy.js';
import { GPU_PLACEMENT, attemptOf, seedAttempt, seedRun } from '../support/ui-data.js';

const REPO = 'github.com/acme/train';
const RUNS = 2000;
const WINDOW_MS = 60_000;

/**
 * The cost of looking (issue 15): with 2,000 finished runs in the index and one open tab on the
 * runs page, what the dashboard's data side asks S3 for in 60 s. It is driven as the server drives
 * it: the summary cache steps on its own through the one-listing-a-second budget; the tab renders
 * page 1 first, then again at every change and every 5 s, and the cost page's numbers too.
 */
describe('ui: the cost of looking on S3 (fauxqs)', function () {
  this.timeout(240_000);
  let emulator: Emulator;
  let proxy: S3Proxy;
  let cache: RunCache | undefined;
  let budget: BudgetedStore | undefined;
  const timers: NodeJS.Timeout[] = [];

  before(async () => {
    emulator = await startEmulator();
    // A second proxy in front of the emulator's, to see every S3 request the dashboard makes.
    proxy = new S3Proxy(emulator.endpoint);
  });
  after(async () => {
    for (const t of timers) clearInterval(t);
    cache?.stop();
    budget?.close();
    await proxy.stop();
    await emulator.stop();
  });

  it('lists at most once a second and never GETs a finished run after the first render', async () => {
    const s3Endpoint = await proxy.start();
    const settings: AwsSettings = { region: 'us-east-1', bucket: uniqueName('ui-cost'), queuePrefix: uniqueName('q'), endpoints: { sqs: emulator.endpoint, s3: s3Endpoint }, maxReceives: 2 };
    const clients = awsClients(settings);
    await ensureAws(clients, settings);
    const store = new S3Store({ s3: clients.s3, bucket: settings.bucket, prefix: 'dstack/' });

    // 2,000 finished runs, as settled runs leave them: the two index keys and the final record.
    const t0 = Date.parse('2026-11-01T00:00:00.000Z');
    const names = Array.from({ length: RUNS }, (_, i) => `done-run-${i + 1}`);
    for (let i = 0; i < RUNS; i += 100) {
      await Promise.all(
        names.slice(i, i + 100).map(async (runName, j) => {
          const n = i + j;
          const submittedAt = new Date(t0 + n * 60_000).toISOString();
          const a = attemptOf(1, submittedAt, { endedAt: new Date(t0 + n * 60_000 + 600_000).toISOString(), instance: { id: `i-${n}`, type: 'g5.xlarge', market: 'spot' } });
          const final: FinalRecord = { status: n % 7 === 0 ? 'failed' : 'done', exitCode: n % 7 === 0 ? 1 : 0, reason: null, finishedAt: a.endedAt ?? submittedAt, attempt: 1 };
          await store.put(submittedKey(REPO, { submittedAt, runName, workflow: n % 2 ? 'train' : 'eval', maxAttempts: 3, owner: 'alice@box' }), '');
          await store.put(runKeys.final(REPO, runName), JSON.stringify(final));
          await store.put(endedKey(REPO, runName, final, endedFacts({ record: { placement: GPU_PLACEMENT }, attempts: [a] }, final)), '');
        }),
      );
    }
    // One run still running: the one a page shows and the cache reads.
    const live = await seedRun(store, REPO, { runName: 'live-run-1', submittedAt: new Date().toISOString(), placement: GPU_PLACEMENT });
    await seedAttempt(store, REPO, live.runName, attemptOf(1, live.submittedAt, { leaseMs: 3_600_000 }));
    proxy.requests = [];

    budget = new BudgetedStore(store);
    const errors: Error[] = [];
    cache = new RunCache({ store: budget, repoId: REPO, onError: (e) => errors.push(e) });
    const startMs = Date.now();
    const first = await cache.page({});
    const firstRenderMs = Date.now() - startMs;
    expect(first.total).to.equal(RUNS + 1);
    expect(first.runs[0]).to.deep.include({ runName: 'live-run-1', status: 'running' });
    // Ten minutes on spot at $0.50/h, as the index key holds it (to the micro-dollar).
    expect(first.runs[1]).to.deep.include({ runName: `done-run-${RUNS}`, instance: 'g5.xlarge spot', costUsd: 0.083333, durationMs: 600_000 });
    const afterFirst = proxy.requests.length;

    // The tab: page 1 again at each change and every 5 s; the cost numbers every 5 s.
    let renders = 1;
    const render = (): void => {
      renders += 1;
      cache?.page({}).catch((e: unknown) => errors.push(e as Error));
    };
    cache.on('change', render);
    timers.push(setInterval(render, 5000));
    timers.push(setInterval(() => void costApi({ runs: cache ?? { list: async () => [] } }, new URLSearchParams('days=30')).catch((e: unknown) => errors.push(e as Error)), 5000));
    await new Promise((r) => setTimeout(r, WINDOW_MS - firstRenderMs));
    const seen: SeenRequest[] = [...proxy.requests];
    cache.stop();
    for (const t of timers) clearInterval(t);

    const bucketPath = `/${settings.bucket}`;
    const lists = seen.filter((r) => r.method === 'GET' && (r.path === bucketPath || r.path === `${bucketPath}/`));
    const finishedReads = seen.slice(afterFirst).filter((r) => (r.method === 'GET' || r.method === 'HEAD') && names.some((n) => r.path.includes(`/runs/${n}/`)));
    expect(errors.map((e) => e.message)).to.deep.equal([]);
    expect(renders).to.be.greaterThan(10);
    // 2,000 keys are two pages of each index listing: the first render takes 5 requests in 3 listings.
    expect(lists.length, `ListObjectsV2 requests in 60 s: ${lists.length}`).to.be.at.most(61);
    expect(lists.length).to.be.at.least(20);
    expect(finishedReads, 'GETs of finished runs after the first render').to.deep.equal([]);
    // The running run is what is read: by its known keys, never by listing its attempts.
    expect(seen.some((r) => r.path.includes('/runs/live-run-1/attempts/0001.json'))).to.equal(true);
  });
});
