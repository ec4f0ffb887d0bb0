import { expect } from 'chai';
import { bashSpec } from '../support/job-spec.js';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as tar from 'tar';
import { saveTree } from '../../common/artifacts/save.js';
import { LeaseLostError, TransportError } from '../../common/errors.js';
import { jsonLogger } from '../../common/log.js';
import { LocalQueue } from '../../common/local/local-queue.js';
import { LocalStore } from '../../common/local/local-store.js';
import type { Queue, Store } from '../../common/ports.js';
import { AttemptRecordSchema, FinalRecordSchema } from '../../common/records/runs.js';
import { readJson, runKeys, type FinalRecord } from '../../common/runs.js';
import type { JobSpec } from '../../common/spec/job-spec.js';
import { Agent } from '../../agent/worker.js';
import { parseLogChunk } from '../../common/log-records.js';
import { removeAll, tempDir, waitFor } from '../support/cli.js';

function spec(runName: string, commands: string[]): JobSpec {
  return bashSpec(commands, { runName });
}

describe('agent: leases and heartbeats', function () {
  this.timeout(20_000);
  let dir: string;
  let queue: LocalQueue;
  let store: LocalStore;
  const lines: string[] = [];
  const makeAgent = (q: Queue, visibilityMs: number, o: { store?: Store; idleTimeoutMs?: number } = {}): Agent =>
    new Agent({
      queue: q,
      store: o.store ?? store,
      log: jsonLogger((l) => lines.push(l), { agentId: 'a1' }),
      agentId: 'a1',
      host: 'test',
      workRoot: `${dir}/work`,
      visibilityMs,
      heartbeatMs: visibilityMs / 3,
      tickMs: 100,
      stopGraceMs: 1000,
      idleTimeoutMs: o.idleTimeoutMs ?? 1500,
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
  /** The queue with some of its methods replaced. */
  const wrapQueue = (over: Partial<Queue>): Queue => ({
    send: (b) => queue.send(b),
    receive: (o) => queue.receive(o),
    extend: (r, v) => queue.extend(r, v),
    ack: (r) => queue.ack(r),
    release: (r, d) => queue.release(r, d),
    defer: (r, d) => queue.defer(r, d),
    deadLetter: (r) => queue.deadLetter(r),
    counts: () => queue.counts(),
    ...over,
  });
  /** The store with some of its methods replaced. */
  const wrapStore = (over: Partial<Store>): Store => {
    const base: Store = store;
    return {
      put: (k, d, o) => base.put(k, d, o),
      head: (k) => base.head(k),
      get: (k) => base.get(k),
      putStream: (k, b, o) => base.putStream(k, b, o),
      getStream: (k) => base.getStream(k),
      list: (p) => base.list(p),
      delete: (k) => base.delete(k),
      touch: (k) => base.touch(k),
      ...over,
    };
  };
  /** What one attempt (or all) of a run wrote to its log. */
  const logText = async (run: string, attempt?: number): Promise<string> => {
    const prefix = attempt === undefined ? '' : `/logs/${String(attempt).padStart(4, '0')}-`;
    const chunks = (await store.list(runKeys.logs('local/test', run))).filter((c) => c.key.includes(prefix));
    return (await Promise.all(chunks.map(async (o) => parseLogChunk((await store.get(o.key)) ?? Buffer.alloc(0)).records))).flat().map((r) => r.d).join('');
  };
  const finalOf = (run: string): Promise<FinalRecord | null> => readJson(store, runKeys.final('local/test', run), FinalRecordSchema);
  const outage = (): Promise<never> => Promise.reject(new TransportError('ServiceUnavailable (HTTP 503)', { retryable: true, statusCode: 503 }));

  it('a Store heartbeat that keeps failing abandons the job (no final status from it); the redelivery finishes it', async () => {
    await queue.send(JSON.stringify(spec('heartbeat-1', ['echo started', 'sleep 2', 'echo done'])));
    const firstAttempt = runKeys.attempt('local/test', 'heartbeat-1', 1);
    // The attempt record is created, but none of its heartbeats can be written.
    const failing = wrapStore({ put: (k, d, o) => (k === firstAttempt && !o?.ifAbsent ? outage() : store.put(k, d, o)) });
    await makeAgent(queue, 1000, { store: failing }).run();
    expect(await finalOf('heartbeat-1')).to.include({ status: 'done', attempt: 2 });
    expect(await logText('heartbeat-1', 1)).to.equal('started\n');
    expect(await logText('heartbeat-1', 2)).to.equal('started\ndone\n');
    expect(lines.some((l) => l.includes('lease lost'))).to.equal(true);
  });

  it('a 1.5 s S3 and SQS outage inside the lease is retried: the job runs once, to its end', async () => {
    await queue.send(JSON.stringify(spec('outage-1', ['echo started', 'sleep 3', 'echo done'])));
    let down = false;
    const stopKey = runKeys.stop('local/test', 'outage-1');
    const flakyQueue = wrapQueue({ extend: (r, v) => (down ? outage() : queue.extend(r, v)) });
    const flakyStore = wrapStore({ get: (k) => (down && k === stopKey ? outage() : store.get(k)) });
    const running = makeAgent(flakyQueue, 3000, { store: flakyStore }).run();
    await waitFor(async () => ((await logText('outage-1')).includes('started') ? true : undefined), 10_000, 'the job to start');
    down = true;
    await new Promise((r) => setTimeout(r, 1500));
    down = false;
    await running;
    expect(lines.some((l) => l.includes('could not extend the lease'))).to.equal(true);
    expect(await finalOf('outage-1')).to.include({ status: 'done', attempt: 1 });
    expect(await logText('outage-1')).to.equal('started\ndone\n');
  });

  it('a retryable TransportError while rebuilding the code hands the job back; the next attempt runs it', async () => {
    const src = `${dir}/src`;
    mkdirSync(src);
    writeFileSync(`${src}/hello.txt`, 'hello from the code\n');
    await tar.create({ file: `${dir}/code.tar`, cwd: src }, ['hello.txt']);
    await store.put('code/abc.tar', readFileSync(`${dir}/code.tar`));
    const s = spec('transport-1', ['cat hello.txt']);
    s.code = { ...s.code, archiveKey: 'code/abc.tar' };
    await queue.send(JSON.stringify(s));
    let gets = 0;
    const flaky = wrapStore({ getStream: (k) => (k === 'code/abc.tar' && gets++ === 0 ? outage() : store.getStream(k)) });
    await makeAgent(queue, 1000, { store: flaky, idleTimeoutMs: 2500 }).run();
    expect(await finalOf('transport-1')).to.include({ status: 'done', attempt: 2 });
    expect(await logText('transport-1', 1)).to.match(/^dstack: attempt 1 could not set up the job \(.*503.*\): handing it back for another attempt\n$/);
    expect(await logText('transport-1', 2)).to.equal('hello from the code\n');
  });

  it('a retryable TransportError while restoring a dep hands the job back; the next attempt runs it', async () => {
    const data = `${dir}/dep-data`;
    mkdirSync(data);
    writeFileSync(`${data}/rows.csv`, 'a,b\n');
    const saved = await saveTree(store, data);
    const s = spec('dep-outage-1', ['cat data/rows.csv']);
    s.pinnedDeps = [{ kind: 'workflow', name: 'prep', repoId: 'local/test', runName: 'prep-1', artifacts: [{ path: 'data', manifestSha: saved.manifestSha }] }];
    await queue.send(JSON.stringify(s));
    let gets = 0;
    const flaky = wrapStore({ get: (k) => (k.startsWith('manifests/') && gets++ === 0 ? outage() : store.get(k)) });
    await makeAgent(queue, 1000, { store: flaky, idleTimeoutMs: 2500 }).run();
    expect(await finalOf('dep-outage-1')).to.include({ status: 'done', attempt: 2 });
    expect(await logText('dep-outage-1', 1)).to.include('handing it back for another attempt');
  });

  it('drain while idle: the long poll is not cut short, and a job it receives is released at once', async () => {
    // As SQS does: an aborted long poll still takes the next message on the server side.
    const sqsLike = wrapQueue({
      receive: async (o) => {
        const m = await queue.receive({ waitMs: o.waitMs, visibilityMs: o.visibilityMs });
        return o.signal?.aborted ? undefined : m;
      },
    });
    const agent = makeAgent(sqsLike, 30_000, { idleTimeoutMs: 10_000 });
    const running = agent.run();
    await waitFor(() => (lines.some((l) => l.includes('agent started')) ? true : undefined), 5000, 'the agent');
    agent.drain();
    await queue.send(JSON.stringify(spec('drained-1', ['echo ran'])));
    await running;
    expect(await queue.counts()).to.deep.equal({ visible: 1, inFlight: 0, dead: 0 });
    expect(await store.list(runKeys.attempts('local/test', 'drained-1'))).to.deep.equal([]);
  });

  it('a job spec of an unknown version is released with one log line and never run', async () => {
    await queue.send(JSON.stringify({ ...spec('future-1', ['echo ran']), specVersion: 99, somethingNew: true }));
    await makeAgent(queue, 30_000, { idleTimeoutMs: 800 }).run();
    expect(await store.list(runKeys.attempts('local/test', 'future-1'))).to.deep.equal([]);
    const said = lines.filter((l) => l.includes('future-1'));
    expect(said).to.have.length(1);
    expect(said[0]).to.include('job spec version 99 is not known to this agent');
    // Released for another agent, not deleted (after the receive limit it is dead-lettered).
    expect(await queue.counts()).to.deep.equal({ visible: 1, inFlight: 0, dead: 0 });
  });

  it('a job spec of a known version with a misshapen field is parsed with its schema, not cast: never run, one log line names the field', async () => {
    const s = { ...spec('misshapen-1', ['echo ran']), artifacts: [{ path: 5, mount: false }] };
    await queue.send(JSON.stringify(s));
    await makeAgent(queue, 30_000, { idleTimeoutMs: 800 }).run();
    expect(await store.list(runKeys.attempts('local/test', 'misshapen-1'))).to.deep.equal([]);
    const dropped = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'dropping a message that is not a job spec');
    expect(dropped).to.have.length(1);
    expect(dropped[0]?.problem).to.be.a('string').and.include('artifacts.0.path');
    // Its run is settled with the reason, not left Submitted.
    const final = await finalOf('misshapen-1');
    expect(final).to.include({ status: 'failed' });
    expect(final?.reason).to.include('could not be read by this agent').and.include('artifacts.0.path');
  });

  it('a run settled while its attempt was being created is not run: the attempt ends at once and the message is acked', async () => {
    await queue.send(JSON.stringify(spec('settled-1', ['echo ran'])));
    const attemptKey = runKeys.attempt('local/test', 'settled-1', 1);
    // The run is settled (stopped, or as an orphan) right as this agent creates its attempt.
    const racing = wrapStore({
      put: async (k, d, o) => {
        await store.put(k, d, o);
        if (k === attemptKey && o?.ifAbsent) {
          await store.put(runKeys.final('local/test', 'settled-1'), JSON.stringify({ status: 'stopped', exitCode: null, reason: 'stopped before it started', finishedAt: new Date().toISOString(), attempt: null }));
        }
      },
    });
    await makeAgent(queue, 30_000, { store: racing, idleTimeoutMs: 800 }).run();
    expect(await logText('settled-1')).to.equal('');
    expect(await finalOf('settled-1')).to.include({ status: 'stopped' });
    expect(await readJson(store, attemptKey, AttemptRecordSchema)).to.include({ state: 'ended' });
    expect(await queue.counts()).to.deep.equal({ visible: 0, inFlight: 0, dead: 0 });
  });

  it('an S3 outage during the final artifact save is retried: a job that succeeded is not failed by it', async () => {
    const s = spec('save-outage-1', ['mkdir out', 'echo data > out/f', 'echo hello']);
    s.artifacts = [{ path: 'out', mount: false }];
    await queue.send(JSON.stringify(s));
    let failures = 0;
    const flaky = wrapStore({ put: (k, d, o) => (k.startsWith('blobs/') && failures++ < 2 ? outage() : store.put(k, d, o)) });
    await makeAgent(queue, 30_000, { store: flaky }).run();
    expect(await finalOf('save-outage-1')).to.include({ status: 'done', attempt: 1 });
    expect(failures).to.be.greaterThan(2);
    const log = await logText('save-outage-1');
    expect(log.startsWith('hello\n')).to.equal(true);
    expect(log.match(/^dstack: .*retrying/gm)).to.have.length(2);
    expect(await queue.counts()).to.deep.equal({ visible: 0, inFlight: 0, dead: 0 });
  });

  it('a save that fills the disk: the run still gets its final status with the reason and its whole log, and no job folder is left', async () => {
    const s = spec('diskfull-1', ['mkdir out', 'echo data > out/f', 'echo hello']);
    s.artifacts = [{ path: 'out', mount: false }];
    await queue.send(JSON.stringify(s));
    let full = false;
    const enospc = (): Promise<never> => Promise.reject(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));
    // The save's blob fills the disk for a while, then fails (its temp file removed, the space freed).
    const disk = wrapStore({
      put: async (k, d, o) => {
        if (full) return enospc();
        if (!k.startsWith('blobs/')) return store.put(k, d, o);
        full = true;
        await new Promise((r) => setTimeout(r, 400));
        full = false;
        return enospc();
      },
    });
    await makeAgent(queue, 2000, { store: disk }).run();
    const final = await finalOf('diskfull-1');
    expect(final?.status).to.equal('failed');
    expect(final?.reason).to.include('could not save artifact out').and.include('ENOSPC');
    expect(await logText('diskfull-1')).to.equal(`hello\ndstack: ${final?.reason ?? ''}\n`);
    expect(readdirSync(`${dir}/work`)).to.deep.equal([]);
    expect(await queue.counts()).to.deep.equal({ visible: 0, inFlight: 0, dead: 0 });
  });
});
