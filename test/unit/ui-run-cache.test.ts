import { expect } from 'chai';
import { once } from 'node:events';
import { LocalStore } from '../../common/local/local-store.js';
import { indexKeysOf } from '../../common/run-index.js';
import { runKeys } from '../../common/runs.js';
import { runApi } from '../../coordinator/ui/api-run.js';
import { RunCache } from '../../coordinator/ui/run-cache.js';
import { FakeClock } from '../support/fake-clock.js';
import { removeAll, tempDir } from '../support/cli.js';
import { CountingStore, GPU_PLACEMENT, attemptOf, seedAttempt, seedEnd, seedRun } from '../support/ui-data.js';

const REPO = 'github.com/acme/train';
const at = (minute: number): string => new Date(Date.UTC(2026, 10, 25, 8, minute)).toISOString();

describe('ui run cache: the runs table at the cost of one listing a step', () => {
  let dir: string;
  let store: CountingStore;
  let clock: FakeClock;
  let cache: RunCache;
  const errors: Error[] = [];

  beforeEach(async () => {
    dir = tempDir('ui-cache');
    store = new CountingStore(new LocalStore(dir));
    clock = new FakeClock();
    errors.length = 0;
    // 60 finished runs: two workflows, the 3rd on spot then on-demand (cost and instance), one tagged.
    for (let i = 0; i < 60; i++) {
      const record = await seedRun(store, REPO, { runName: `done-run-${i}`, workflow: i % 2 ? 'train' : 'eval', submittedAt: at(i), owner: 'alice@box', placement: GPU_PLACEMENT, ...(i === 7 ? { tag: 'best' } : {}) });
      const attempts = i === 3 ? [attemptOf(1, at(i), { endedAt: at(i + 60), instance: { id: 'i-1', type: 'g5.xlarge', market: 'spot' } }), attemptOf(2, at(i + 60), { endedAt: at(i + 90), instance: { id: 'i-2', type: 'g5.xlarge', market: 'on-demand' } })] : [attemptOf(1, at(i), { endedAt: at(i + 1) })];
      await seedEnd(store, REPO, record, attempts, { status: i % 5 === 0 ? 'failed' : 'done', exitCode: i % 5 === 0 ? 1 : 0, reason: null, finishedAt: attempts.at(-1)?.endedAt ?? at(i), attempt: attempts.length });
    }
    await store.put(runKeys.tag(REPO, 'best'), JSON.stringify({ tag: 'best', runName: 'done-run-7', createdAt: at(8) }));
    // One run running on a spot instance since 08:59.
    await seedRun(store, REPO, { runName: 'live-run-1', submittedAt: at(59), placement: GPU_PLACEMENT });
    await seedAttempt(store, REPO, 'live-run-1', attemptOf(1, at(59), { instance: { id: 'i-9', type: 'g5.xlarge', market: 'spot' } }));
    store.reset();
    // Steps are driven by hand here (the timer's first step would come after a day), except in the last test.
    cache = new RunCache({ store, repoId: REPO, clock, tickMs: 86_400_000, onError: (e) => errors.push(e) });
  });
  afterEach(() => {
    cache.stop();
    removeAll(dir);
    expect(errors).to.deep.equal([]);
  });

  it('first page: the whole index in three listings; finished runs shown from their keys, unread', async () => {
    const page = await cache.page({});
    expect(page.total).to.equal(61);
    expect(page.pageSize).to.equal(50);
    expect(page.runs).to.have.length(50);
    expect(page.workflows).to.deep.equal(['eval', 'train']);
    expect(store.lists.map((l) => l.prefix).sort()).to.deep.equal([`repos/${REPO}/index/ended/`, `repos/${REPO}/index/submitted/`, `repos/${REPO}/tags/`]);
    // The tag record and the one unfinished run are read; no finished run is.
    expect(store.gets.filter((k) => k.includes('/runs/done-run-'))).to.deep.equal([]);
    expect(page.runs[0]).to.deep.include({ runName: 'live-run-1', status: 'running', attempt: 1, instance: 'g5.xlarge spot' });
    const second = await cache.page({ page: 2 });
    const run3 = second.runs.find((r) => r.runName === 'done-run-3');
    expect(run3).to.deep.equal({
      runName: 'done-run-3', workflow: 'train', status: 'done', attempt: 2, maxAttempts: 3, owner: 'alice@box', submittedAt: at(3),
      durationMs: 90 * 60_000, instance: 'g5.xlarge on-demand', costUsd: 1.1, tag: null,
    });
    expect(second.runs.find((r) => r.runName === 'done-run-7')?.tag).to.equal('best');
  });

  it('filters by workflow, status and tag, and pages by 50', async () => {
    expect((await cache.page({ workflow: 'eval' })).total).to.equal(30);
    expect((await cache.page({ status: 'failed' })).runs.map((r) => r.runName)).to.have.length(12);
    expect((await cache.page({ status: 'running' })).runs.map((r) => r.runName)).to.deep.equal(['live-run-1']);
    expect((await cache.page({ tag: 'be' })).runs.map((r) => r.runName)).to.deep.equal(['done-run-7']);
    const last = await cache.page({ page: 9 });
    expect([last.page, last.runs.length]).to.deep.equal([2, 11]);
  });

  it('each step lists only new submitted keys, reads only the watched unfinished run, and tells of changes', async () => {
    await cache.page({});
    store.reset();
    const changes: Array<[number, string[]]> = [];
    cache.on('change', (version: number, runs: string[]) => changes.push([version, runs]));
    const v0 = cache.version;
    await clock.tickAsync(1000);
    await cache.step();
    expect(store.lists).to.have.length(1);
    expect(store.lists[0]?.startAfter).to.be.a('string');
    expect(changes).to.deep.equal([]);
    // A new run appears; the running one ends.
    const fresh = await seedRun(store, REPO, { runName: 'new-run-1', submittedAt: at(61) });
    const live = await seedRun(store, REPO, { runName: 'live-run-1', submittedAt: at(59), placement: GPU_PLACEMENT });
    const ended = attemptOf(1, at(59), { endedAt: at(69), instance: { id: 'i-9', type: 'g5.xlarge', market: 'spot' } });
    await seedAttempt(store, REPO, 'live-run-1', ended);
    await seedEnd(store, REPO, live, [ended], { status: 'done', exitCode: 0, reason: null, finishedAt: at(69), attempt: 1 });
    store.reset();
    await cache.step();
    expect(store.lists).to.have.length(1);
    expect(changes.map(([v]) => v)).to.deep.equal([v0 + 1]);
    expect(changes[0]?.[1].sort()).to.deep.equal(['live-run-1', fresh.runName].sort());
    const page = await cache.page({});
    expect(page.runs.slice(0, 2).map((r) => [r.runName, r.status])).to.deep.equal([['new-run-1', 'submitted'], ['live-run-1', 'done']]);
    expect(page.runs[1]).to.deep.include({ durationMs: 10 * 60_000, costUsd: 0.5 / 6, instance: 'g5.xlarge spot' });
    // Once seen ended, a run is never read again, even by a full listing.
    store.reset();
    await cache.step();
    await clock.tickAsync(300_000);
    await cache.step();
    expect(store.gets.filter((k) => k.includes('/runs/live-run-1/'))).to.deep.equal([]);
  });

  it('a full listing every 5 minutes sees a removed run', async () => {
    await cache.page({});
    const record = await seedRun(store, REPO, { runName: 'done-run-5', workflow: 'train', submittedAt: at(5), owner: 'alice@box', placement: GPU_PLACEMENT });
    await store.delete(await indexKeysOf(store, REPO, record));
    const changes: string[][] = [];
    cache.on('change', (_v: number, runs: string[]) => changes.push(runs));
    await cache.step();
    expect((await cache.page({})).total).to.equal(61);
    await clock.tickAsync(300_000);
    store.reset();
    await cache.step();
    expect(store.lists).to.have.length(3);
    expect(changes).to.deep.equal([['done-run-5']]);
    expect((await cache.page({})).total).to.equal(60);
  });

  it('a full listing that fails is tried again at the next step, not 5 minutes later', async () => {
    const failing = new CountingStore(store);
    let fail = true;
    const flaky = Object.assign(Object.create(failing) as CountingStore, {
      list: (prefix: string, o?: { startAfter?: string }) => (fail ? Promise.reject(new Error('S3 is down')) : failing.list(prefix, o)),
    });
    cache.stop();
    cache = new RunCache({ store: flaky, repoId: REPO, clock, tickMs: 86_400_000, onError: (e) => errors.push(e) });
    expect((await cache.page({})).total).to.equal(0);
    expect(errors.splice(0).map((e) => e.message)).to.deep.equal(['S3 is down']);
    fail = false;
    await cache.step();
    // The whole index again (not an incremental listing that would take every run for a new one and read it).
    expect(failing.lists.map((l) => l.prefix)).to.include(`repos/${REPO}/index/ended/`);
    expect((await cache.page({})).total).to.equal(61);
    expect(failing.gets.filter((k) => k.includes('/runs/done-run-'))).to.deep.equal([]);
  });

  it('steps on its own once started, one step every tickMs, until stopped', async () => {
    cache.stop();
    cache = new RunCache({ store, repoId: REPO, clock, tickMs: 2000, onError: (e) => errors.push(e) });
    await cache.start();
    store.reset();
    // Each step does real I/O: let it finish before the clock moves on to the next.
    for (let n = 1; n <= 3; n++) {
      const stepped = once(cache, 'step');
      await clock.tickAsync(2000);
      await stepped;
    }
    await clock.tickAsync(1000);
    expect(store.lists).to.have.length(3);
    cache.stop();
    await clock.tickAsync(10_000);
    expect(store.lists).to.have.length(3);
  });

  it('while a tab listens, a run on the last page that stays queued past the watch time still shows its start at the next step', async () => {
    cache.stop();
    cache = new RunCache({ store, repoId: REPO, clock, tickMs: 86_400_000, fullEveryMs: 86_400_000, watchMs: 600_000, onError: (e) => errors.push(e) });
    await seedRun(store, REPO, { runName: 'queued-run-1', submittedAt: at(60) });
    expect((await cache.page({})).runs[0]).to.deep.include({ runName: 'queued-run-1', status: 'submitted' });
    cache.setWatchers(1);
    const changes: string[][] = [];
    cache.on('change', (_v: number, runs: string[]) => changes.push(runs));
    // Queued for 20 minutes, twice the watch time, with nothing new to show meanwhile.
    await clock.tickAsync(1_200_000);
    await cache.step();
    await seedAttempt(store, REPO, 'queued-run-1', attemptOf(1, at(80)));
    await cache.step();
    expect(changes).to.deep.equal([['queued-run-1']]);
    expect((await cache.page({})).runs[0]).to.deep.include({ runName: 'queued-run-1', status: 'running' });
  });

  it('with no tab listening, a run unseen for the watch time is no longer read', async () => {
    cache.stop();
    cache = new RunCache({ store, repoId: REPO, clock, tickMs: 86_400_000, fullEveryMs: 86_400_000, watchMs: 600_000, onError: (e) => errors.push(e) });
    await cache.page({});
    cache.setWatchers(1);
    cache.setWatchers(0);
    await clock.tickAsync(1_200_000);
    await cache.step();
    store.reset();
    await cache.step();
    expect(store.gets.filter((k) => k.includes('/runs/live-run-1/'))).to.deep.equal([]);
  });

  it("the run page and the table show the tag index's tag, and both see a tag moved to another run", async () => {
    const deps = { store, repoId: REPO, ctx: { owner: async () => 'alice@box', secrets: undefined }, runs: cache, seen: new Map<string, string[]>() };
    // done-run-7's record says `best` too; done-run-9's record says `old`, which the index does not.
    await seedRun(store, REPO, { runName: 'tagged-run-1', submittedAt: at(61), tag: 'stale' });
    await store.put(runKeys.tag(REPO, 'fresh'), JSON.stringify({ tag: 'fresh', runName: 'tagged-run-1', createdAt: at(62) }));
    expect((await cache.page({})).runs[0]).to.deep.include({ runName: 'tagged-run-1', tag: 'fresh' });
    expect((await runApi(deps, 'tagged-run-1')).run).to.deep.include({ tag: 'fresh' });
    // `best` moves from done-run-7 to done-run-9 (the CLI deletes the tag and makes it again).
    expect((await runApi(deps, 'done-run-7')).run).to.deep.include({ tag: 'best' });
    await store.put(runKeys.tag(REPO, 'best'), JSON.stringify({ tag: 'best', runName: 'done-run-9', createdAt: at(63) }));
    cache.refreshSoon();
    await cache.step();
    expect((await runApi(deps, 'done-run-7')).run).to.deep.include({ tag: null });
    expect((await runApi(deps, 'done-run-9')).run).to.deep.include({ tag: 'best' });
  });

  it('the run page row of a finished run is the row the table shows', async () => {
    const deps = { store, repoId: REPO, ctx: { owner: async () => 'alice@box', secrets: undefined }, runs: cache, seen: new Map<string, string[]>() };
    await seedAttempt(store, REPO, 'done-run-3', attemptOf(1, at(3), { endedAt: at(63), instance: { id: 'i-1', type: 'g5.xlarge', market: 'spot' } }));
    await seedAttempt(store, REPO, 'done-run-3', attemptOf(2, at(63), { endedAt: at(93), instance: { id: 'i-2', type: 'g5.xlarge', market: 'on-demand' } }));
    const table = (await cache.page({ page: 2 })).runs.find((r) => r.runName === 'done-run-3');
    expect(table).to.deep.include({ durationMs: 90 * 60_000, costUsd: 1.1 });
    expect((await runApi(deps, 'done-run-3')).run).to.deep.equal(table);
  });

  it("a run page opened on an unfinished run, not on the table's last page, hears of its changes while the tab listens", async () => {
    cache.stop();
    cache = new RunCache({ store, repoId: REPO, clock, tickMs: 86_400_000, fullEveryMs: 86_400_000, watchMs: 600_000, onError: (e) => errors.push(e) });
    const deps = { store, repoId: REPO, ctx: { owner: async () => 'alice@box', secrets: undefined }, runs: cache, seen: new Map<string, string[]>() };
    await cache.page({ workflow: 'eval' });
    expect((await runApi(deps, 'live-run-1')).run).to.deep.include({ runName: 'live-run-1', attempt: 1 });
    cache.setWatchers(1);
    const changes: string[][] = [];
    cache.on('change', (_v: number, runs: string[]) => changes.push(runs));
    await clock.tickAsync(1_200_000);
    await cache.step();
    await seedAttempt(store, REPO, 'live-run-1', attemptOf(2, at(80), { instance: { id: 'i-10', type: 'g5.xlarge', market: 'spot' } }));
    await cache.step();
    expect(changes).to.deep.equal([['live-run-1']]);
  });
});
