import { expect } from 'chai';
import { LeaseLostError } from '../../common/errors.js';
import { jsonLogger } from '../../common/log.js';
import { LocalQueue } from '../../common/local/local-queue.js';
import { LocalStore } from '../../common/local/local-store.js';
import type { Queue } from '../../common/ports.js';
import { readJson, runKeys, type FinalRecord } from '../../common/runs.js';
import type { JobSpec } from '../../common/spec/job-spec.js';
import { Agent } from '../../agent/worker.js';
import { LogShipper } from '../../agent/log-shipper.js';
import { parseLogChunk } from '../../common/log-records.js';
import { removeAll, tempDir } from '../support/cli.js';
import { FinalRecordSchema } from '../../common/records/runs.js';

function spec(runName: string, commands: string[]): JobSpec {
  return {
    specVersion: 1,
    repoId: 'local/test',
    runName,
    jobId: 'job1',
    workflow: 'w',
    provider: 'bash',
    commands,
    env: {},
    workingDir: '.',
    artifacts: [],
    deps: [],
    pinnedDeps: [],
    cache: false,
    portCount: 0,
    resources: { interruptible: false, local: false },
    runArgs: [],
    code: { commit: null, branch: null, remoteUrl: null, archiveKey: null, diffKey: null, diffSha256: null, untrackedKey: null, untrackedSha256: null },
    submittedAt: new Date().toISOString(),
  };
}

describe('agent: leases and heartbeats', function () {
  this.timeout(20_000);
  let dir: string;
  let queue: LocalQueue;
  let store: LocalStore;
  const lines: string[] = [];
  const makeAgent = (q: Queue, visibilityMs: number): Agent =>
    new Agent({
      queue: q,
      store,
      log: jsonLogger((l) => lines.push(l), { agentId: 'a1' }),
      agentId: 'a1',
      host: 'test',
      workRoot: `${dir}/work`,
      visibilityMs,
      heartbeatMs: visibilityMs / 3,
      tickMs: 100,
      stopGraceMs: 1000,
      idleTimeoutMs: 1500,
      maxAttempts: 3,
      jobEnv: { PATH: '/usr/bin:/bin' },
      artifactSyncMs: 30_000,
      hostFacts: { hostname: 'test', platform: 'linux', arch: 'x64', cpus: 2, memoryMiB: 1024, nodeVersion: 'v20', agentVersion: 'test' },
    });
  beforeEach(() => {
    dir = tempDir('agent');
    queue = new LocalQueue({ root: `${dir}/q`, name: 'jobs', maxReceives: 3 });
    store = new LocalStore(`${dir}/s`);
  });
  afterEach(() => removeAll(dir));

  it('keeps a job longer than the visibility timeout leased, then settles and acks it', async () => {
    await queue.send(JSON.stringify(spec('long-job-1', ['echo working', 'sleep 2.5', 'echo finished'])));
    const agent = makeAgent(queue, 1000);
    const running = agent.run();
    await new Promise((r) => setTimeout(r, 1500));
    expect(await new LocalQueue({ root: `${dir}/q`, name: 'jobs', maxReceives: 3 }).receive({ waitMs: 0, visibilityMs: 1000 })).to.equal(undefined);
    await running;
    const final = await readJson(store, runKeys.final('local/test', 'long-job-1'), FinalRecordSchema);
    expect(final).to.include({ status: 'done', exitCode: 0, attempt: 1 });
    expect(await queue.counts()).to.deep.equal({ visible: 0, inFlight: 0, dead: 0 });
    const logs = await store.list(runKeys.logs('local/test', 'long-job-1'));
    const text = (await Promise.all(logs.map(async (o) => parseLogChunk((await store.get(o.key)) ?? Buffer.alloc(0)).records))).flat().map((r) => r.d).join('');
    expect(text).to.equal('working\nfinished\n');
    const ended = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'job ended');
    expect(ended).to.include({ runName: 'long-job-1', jobId: 'job1', attempt: '1 of 3', agentId: 'a1', outcome: 'settled' });
    expect(ended?.durationMs).to.be.a('number');
  });

  it('abandons the job when the heartbeat fails: kills it, no final status, no ack; the redelivery finishes it', async () => {
    await queue.send(JSON.stringify(spec('lost-lease-1', ['echo started', 'sleep 2', 'echo done'])));
    let failures = 0;
    const flaky: Queue = {
      send: (b) => queue.send(b),
      receive: (o) => queue.receive(o),
      // The first delivery's lease cannot be extended, as if the agent had stalled past its timeout.
      extend: (r, v) => (failures++ === 0 ? Promise.reject(new LeaseLostError('receipt expired')) : queue.extend(r, v)),
      ack: (r) => queue.ack(r),
      release: (r, d) => queue.release(r, d),
      defer: (r, d) => queue.defer(r, d),
      deadLetter: (r) => queue.deadLetter(r),
      counts: () => queue.counts(),
    };
    await makeAgent(flaky, 600).run();
    const final = await readJson(store, runKeys.final('local/test', 'lost-lease-1'), FinalRecordSchema);
    expect(final).to.include({ status: 'done', attempt: 2 });
    const chunks = await store.list(runKeys.logs('local/test', 'lost-lease-1'));
    const byAttempt = async (n: string): Promise<string> =>
      (await Promise.all(chunks.filter((c) => c.key.includes(`/logs/${n}-`)).map(async (o) => parseLogChunk((await store.get(o.key)) ?? Buffer.alloc(0)).records)))
        .flat()
        .map((r) => r.d)
        .join('');
    expect(await byAttempt('0001')).to.equal('started\n');
    expect(await byAttempt('0002')).to.equal('started\ndone\n');
    expect(lines.some((l) => l.includes('lease lost'))).to.equal(true);
    expect(await queue.counts()).to.deep.equal({ visible: 0, inFlight: 0, dead: 0 });
  });
});
