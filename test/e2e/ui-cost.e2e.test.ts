import { expect } from 'chai';
import { request } from 'node:http';
import { endedFacts } from '../../common/run-cost.js';
import { endedKey, submittedKey } from '../../common/run-index.js';
import { runKeys, type FinalRecord } from '../../common/runs.js';
import { repoInfo } from '../../coordinator/code-capture.js';
import { uiCommand } from '../../coordinator/commands/ui.js';
import { makeRepo, removeAll, tempDir } from '../support/cli.js';
import { coordinatorContext } from '../support/coordinator.js';
import { startEmulator, uniqueName, type Emulator } from '../support/fauxqs.js';
import { S3Proxy } from '../support/s3-proxy.js';
import { GPU_PLACEMENT, attemptOf, seedAttempt, seedRun } from '../support/ui-data.js';

const RUNS = 2000;
const WINDOW_MS = 60_000;

/**
 * The cost of looking (issue 15): `dstack ui` on the AWS backend (S3 on fauxqs, behind a proxy that
 * sees every request), 2,000 finished runs in the index and one running, and one open tab on the
 * runs page: it renders the page, then again at every `runs` event of its event stream, for 60 s.
 */
describe('e2e: dstack ui, the cost of looking on S3 (fauxqs)', function () {
  this.timeout(240_000);
  let emulator: Emulator | undefined;
  let proxy: S3Proxy | undefined;
  let repo = '';
  let home = '';

  before(async () => {
    emulator = await startEmulator();
    // A proxy in front of the emulator's S3, to see every request the dashboard makes.
    proxy = new S3Proxy(emulator.endpoint);
  });
  after(async () => {
    await proxy?.stop();
    await emulator?.stop();
    removeAll(repo, home);
  });

  it('lists at most once a second and never GETs a finished run after the first render', async () => {
    const em = emulator as Emulator;
    const seen = proxy as S3Proxy;
    const s3 = await seen.start();
    repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: train\n    provider: bash\n    commands: [echo hi]\n' });
    home = tempDir('ui-cost-home');
    const bucket = uniqueName('uicost');
    const yaml = `backend: aws
aws:
  region: us-east-1
  bucket: ${bucket}
  queuePrefix: ${uniqueName('uc')}
  endpoints: { sqs: "${em.endpoint}", s3: "${s3}", sts: "${em.endpoint}" }
  agents: none
`;
    const noCompute = { plan: () => Promise.reject(new Error('no compute in this test')), ensureCapacity: () => Promise.resolve(), listAgents: () => Promise.resolve([]) };
    const ctx = await coordinatorContext({ configYaml: yaml, home, cwd: repo, compute: noCompute, owner: 'alice@box' });
    const repoId = (await repoInfo(repo)).repoId;
    const store = ctx.store;

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
          await store.put(submittedKey(repoId, { submittedAt, runName, workflow: n % 2 ? 'train' : 'eval', maxAttempts: 3, owner: 'alice@box' }), '');
          await store.put(runKeys.final(repoId, runName), JSON.stringify(final));
          await store.put(endedKey(repoId, runName, final, endedFacts({ record: { placement: GPU_PLACEMENT }, attempts: [a] }, final)), '');
        }),
      );
    }
    // One run still running: the page shows it, and it is the one run the server reads.
    const live = await seedRun(store, repoId, { runName: 'live-run-1', submittedAt: new Date().toISOString(), placement: GPU_PLACEMENT });
    await seedAttempt(store, repoId, live.runName, attemptOf(1, live.submittedAt, { leaseMs: 3_600_000 }));
    seen.requests = [];

    let terminate = (): void => undefined;
    const terminated = new Promise<void>((resolve) => (terminate = resolve));
    const exited = uiCommand(ctx, { port: 0, open: false }, { terminated });
    let url: URL | undefined;
    for (let i = 0; i < 200 && !url; i++) {
      const m = /dstack ui: (http:\S+)/.exec(ctx.out.text());
      if (m?.[1]) url = new URL(m[1]);
      else await new Promise((r) => setTimeout(r, 50));
    }
    if (!url) throw new Error(`no URL printed: ${ctx.out.text()}`);
    let headers: Record<string, string> = { host: url.host };
    const call = (target: URL): Promise<{ status: number; body: string; location: string }> =>
      new Promise((resolve, reject) => {
        request(target, { headers }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body, location: res.headers.location ?? '' }));
        })
          .on('error', reject)
          .end();
      });
    // The printed URL logs in: the app and its API live below the prefix it redirects to.
    const login = await call(url);
    expect(login.status).to.equal(302);
    const base = new URL(login.location, url);
    headers = { ...headers, cookie: `dstack_ui=${url.searchParams.get('token') ?? ''}` };
    const get = (path: string): Promise<{ status: number; body: string }> => call(new URL(path, base));

    const startMs = Date.now();
    const first = await get('api/runs');
    expect(first.status, first.body).to.equal(200);
    const page = JSON.parse(first.body) as { total: number; runs: Array<{ runName: string; status: string; costUsd: number | null }> };
    expect(page.total).to.equal(RUNS + 1);
    expect(page.runs[0]).to.deep.include({ runName: 'live-run-1', status: 'running' });
    // A finished run's cost comes from its index key: no run was read for it.
    expect(page.runs[1]?.costUsd).to.be.a('number');
    const afterFirst = seen.requests.length;
    // The tab's event stream; each `runs` event makes it fetch the page again, as the app does.
    let renders = 1;
    const events = request(new URL('api/events', base), { headers }, (res) =>
      res.on('data', (d: Buffer) => {
        if (!d.toString().includes('event: runs')) return;
        renders++;
        void get('api/runs');
      }),
    );
    events.on('error', () => undefined);
    events.end();
    await new Promise((r) => setTimeout(r, WINDOW_MS - (Date.now() - startMs)));
    const window = [...seen.requests];
    events.destroy();
    terminate();
    expect(await exited).to.equal(0);

    const lists = window.filter((r) => r.method === 'GET' && (r.path === `/${bucket}` || r.path === `/${bucket}/`));
    const finishedReads = window.slice(afterFirst).filter((r) => (r.method === 'GET' || r.method === 'HEAD') && names.some((n) => r.path.includes(`/runs/${n}/`)));
    // 2,000 keys are two pages of each index listing: the first render takes a few requests in one second.
    expect(lists.length, `ListObjectsV2 requests in 60 s: ${lists.length} (${renders} renders)`).to.be.at.most(61);
    // The page is kept live: the index is listed again and again, not once.
    expect(lists.length).to.be.at.least(20);
    expect(finishedReads.map((r) => r.path), 'reads of finished runs after the first render').to.deep.equal([]);
    // The running run is read by its known keys.
    expect(window.some((r) => r.path.includes('/runs/live-run-1/attempts/'))).to.equal(true);
    expect(ctx.out.text()).to.not.match(/reading runs:/);
  });
});
