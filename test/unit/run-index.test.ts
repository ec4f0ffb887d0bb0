import { expect } from 'chai';
import { Readable } from 'node:stream';
import { LocalStore } from '../../common/local/local-store.js';
import type { ObjectInfo, Store } from '../../common/ports.js';
import { endedKey, indexKeys, listSummaries } from '../../common/run-index.js';
import { createRun, listRuns, runKeys, settleRun, type RunRecord } from '../../common/runs.js';
import type { JobSpec } from '../../common/spec/job-spec.js';
import { removeAll, tempDir } from '../support/cli.js';

/** A Store that counts what is read, to show that listings cost listings and not reads. */
class CountingStore implements Store {
  gets = 0;
  lists: string[] = [];
  constructor(private readonly inner: Store) {}
  put(key: string, body: string | Buffer, o?: { ifAbsent?: boolean }): Promise<void> {
    return this.inner.put(key, body, o);
  }
  head(key: string): Promise<ObjectInfo | undefined> {
    return this.inner.head(key);
  }
  get(key: string): Promise<Buffer | undefined> {
    this.gets += 1;
    return this.inner.get(key);
  }
  putStream(key: string, body: Readable, o?: { sizeBytes?: number }): Promise<void> {
    return this.inner.putStream(key, body, o);
  }
  getStream(key: string): Promise<Readable> {
    this.gets += 1;
    return this.inner.getStream(key);
  }
  list(prefix: string): Promise<ObjectInfo[]> {
    this.lists.push(prefix);
    return this.inner.list(prefix);
  }
  delete(keys: string[]): Promise<void> {
    return this.inner.delete(keys);
  }
  touch(key: string): Promise<boolean> {
    return this.inner.touch(key);
  }
}

const REPO = 'github.com/acme/train';

function record(runName: string, i: number, workflow = 'train'): RunRecord {
  return {
    runName,
    repoId: REPO,
    workflow,
    jobId: `j${i}`,
    submittedAt: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
    maxAttempts: 3,
    spec: {} as JobSpec,
    overrides: [],
    toolVersion: 'test',
  };
}

describe('run index: ps over thousands of runs', function () {
  this.timeout(60_000);
  let dir: string;
  let store: CountingStore;
  const RUNS = 2000;
  const UNFINISHED = 3;

  before(async () => {
    dir = tempDir('index');
    store = new CountingStore(new LocalStore(dir));
    for (let i = 0; i < RUNS; i++) {
      const r = await createRun(store, (name) => record(name, i, i % 2 ? 'train' : 'eval, "quoted" ~ 100%'));
      if (i < RUNS - UNFINISHED) {
        const failed = i % 10 === 0;
        await settleRun(store, REPO, r.runName, {
          status: failed ? 'failed' : 'done',
          exitCode: failed ? 2 : 0,
          reason: failed ? `exit code 2: ${'é'.repeat(200)}` : null,
          finishedAt: new Date().toISOString(),
          attempt: 1,
        });
      }
    }
  });
  after(() => removeAll(dir));

  it('lists every run from two index listings, reading only the unfinished runs', async () => {
    store.gets = 0;
    store.lists = [];
    const rows = await listRuns(store, REPO);
    expect(rows).to.have.length(RUNS);
    expect(rows.filter((r) => r.view !== null)).to.have.length(UNFINISHED);
    // Per unfinished run: run.json, final.json, stop.json, artifacts.json (its attempts are listed, none here).
    expect(store.gets).to.equal(UNFINISHED * 4);
    expect(store.lists.filter((p) => p === runKeys.runsPrefix(REPO))).to.deep.equal([]);
    expect(store.lists.filter((p) => p.startsWith(`repos/${REPO}/index/`)).sort()).to.deep.equal([indexKeys.ended(REPO), indexKeys.submitted(REPO)]);
    // Newest first, with what ps shows decoded from the keys.
    expect(rows[0]?.status).to.equal('submitted');
    const failed = rows.find((r) => r.status === 'failed');
    expect(failed?.summary.ended?.exitCode).to.equal(2);
    expect(failed?.summary.ended?.reason).to.match(/^exit code 2: é+$/);
    expect(rows.map((r) => r.summary.workflow)).to.include('eval, "quoted" ~ 100%');
  });

  it('repairs a missing ended key when it finds the run finished', async () => {
    const r = await createRun(store, (name) => record(name, RUNS + 1));
    const final = { status: 'done' as const, exitCode: 0, reason: null, finishedAt: new Date().toISOString(), attempt: 1 };
    // As if the settler had died between the final status and its index key.
    await store.put(runKeys.final(REPO, r.runName), JSON.stringify(final));
    expect((await listSummaries(store, REPO)).find((s) => s.runName === r.runName)?.ended).to.equal(null);
    const row = (await listRuns(store, REPO)).find((x) => x.summary.runName === r.runName);
    expect(row?.status).to.equal('done');
    expect(await store.head(endedKey(REPO, r.runName, final))).to.not.equal(undefined);
    expect((await listSummaries(store, REPO)).find((s) => s.runName === r.runName)?.ended?.status).to.equal('done');
  });
});
