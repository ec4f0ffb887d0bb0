import { expect } from 'chai';
import { existsSync, mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { blobKey, manifestKey } from '../../common/artifacts/manifest.js';
import { readManifest, restoreTree } from '../../common/artifacts/restore.js';
import { saveTree } from '../../common/artifacts/save.js';
import { collectGarbage, type GcOptions } from '../../common/gc.js';
import { LocalStore } from '../../common/local/local-store.js';
import type { Store } from '../../common/ports.js';
import { submittedKey } from '../../common/run-index.js';
import { listRuns, runKeys } from '../../common/runs.js';
import { ExternalAgents } from '../../common/local/local-compute.js';
import { gcCommand } from '../../coordinator/commands/gc.js';
import { makeRepo, removeAll, tempDir } from '../support/cli.js';
import { coordinatorContext } from '../support/coordinator.js';

const HOUR = 60 * 60 * 1000;

/** A folder with the given files (path → content). */
function tree(files: Record<string, string>): string {
  const dir = tempDir('tree');
  for (const [p, c] of Object.entries(files)) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    writeFileSync(join(dir, p), c);
  }
  return dir;
}

describe('dstack gc: the collector', () => {
  let root: string;
  let store: LocalStore;
  const dirs: string[] = [];
  beforeEach(() => {
    root = tempDir('gc');
    store = new LocalStore(join(root, 'store'));
  });
  afterEach(() => removeAll(root, ...dirs.splice(0)));

  const gc = (o: Partial<GcOptions> = {}) => collectGarbage({ store, orphanGraceMs: 2 * 60_000, dryRun: false, ...o });

  /** A finished run with the given artifacts (and pinned deps), as the agent leaves it. */
  async function finishedRun(runName: string, manifests: string[], pinned: string[] = []): Promise<void> {
    const record = {
      runName,
      repoId: 'r1',
      workflow: 'w',
      jobId: 'j',
      submittedAt: new Date().toISOString(),
      maxAttempts: 1,
      spec: { pinnedDeps: pinned.map((m) => ({ kind: 'workflow', name: 'w', repoId: 'r1', runName: 'gone-1', artifacts: [{ path: 'p', manifestSha: m }] })) },
      overrides: [],
      toolVersion: 't',
    };
    await store.put(runKeys.record('r1', runName), JSON.stringify(record));
    await store.put(submittedKey('r1', record), '');
    await store.put(runKeys.final('r1', runName), JSON.stringify({ status: 'done', exitCode: 0, reason: null, finishedAt: record.submittedAt, attempt: 1 }));
    const index = { artifacts: manifests.map((m) => ({ path: 'out', manifestSha: m, files: 1, sizeBytes: 1 })), savedAt: record.submittedAt, complete: true };
    await store.put(runKeys.artifacts('r1', runName), JSON.stringify(index));
  }

  const save = async (files: Record<string, string>): Promise<string> => {
    const dir = tree(files);
    dirs.push(dir);
    return (await saveTree(store, dir)).manifestSha;
  };
  const blobsOf = async (manifestSha: string): Promise<string[]> => {
    const m = await readManifest(store, manifestSha);
    return m.entries.flatMap((e) => [...(e.chunks ?? []), ...(e.pack ? [e.pack.sha] : [])]);
  };

  it('removes job folders of dead attempts and keeps those of a live agent', async () => {
    const work = join(root, 'work');
    const deadJob = join(work, 'local-dead', 'quick-fox-1-1-abc123');
    const earlier = join(work, 'local-live', 'quick-fox-2-1-def456');
    const current = join(work, 'local-live', 'quick-fox-3-1-0a0b0c');
    for (const d of [deadJob, earlier, current]) {
      mkdirSync(join(d, 'code'), { recursive: true });
      writeFileSync(join(d, 'code', 'big.bin'), Buffer.alloc(1000));
    }
    const startedAt = Date.now() - 10_000;
    // The live agent's earlier incarnation (same id) left this folder before the agent started.
    utimesSync(earlier, new Date(startedAt - 60_000), new Date(startedAt - 60_000));
    const liveAgents = async () => [{ id: 'local-live', startedAt: new Date(startedAt).toISOString() }];

    const dry = await gc({ workRoot: work, liveAgents, dryRun: true });
    expect(dry.removed.map((x) => x.what).sort()).to.deep.equal([deadJob, earlier].sort());
    expect(existsSync(deadJob)).to.equal(true);

    const report = await gc({ workRoot: work, liveAgents });
    expect(report.removed.filter((x) => x.kind === 'work folder').map((x) => [x.what, x.sizeBytes])).to.have.deep.members([
      [deadJob, 1000],
      [earlier, 1000],
    ]);
    expect(existsSync(deadJob)).to.equal(false);
    expect(existsSync(join(work, 'local-dead'))).to.equal(false);
    expect(existsSync(earlier)).to.equal(false);
    expect(readFileSync(join(current, 'code', 'big.bin')).length).to.equal(1000);
  });

  it('removes temp files older than the grace and keeps fresh ones', async () => {
    await store.put('x/y', 'staged and committed');
    const tmp = store.tmp;
    writeFileSync(join(tmp, 'stale'), 'left by a crash');
    writeFileSync(join(tmp, 'fresh'), 'being written');
    utimesSync(join(tmp, 'stale'), new Date(Date.now() - 2 * HOUR), new Date(Date.now() - 2 * HOUR));
    const report = await gc({ tempDirs: [tmp] });
    expect(report.removed.filter((x) => x.kind === 'temp file').map((x) => x.what)).to.deep.equal([join(tmp, 'stale')]);
    expect(existsSync(join(tmp, 'stale'))).to.equal(false);
    expect(existsSync(join(tmp, 'fresh'))).to.equal(true);
  });

  it('sweeps blobs and manifests no run references (rm, unfinished saves) and keeps those of live runs and pinned deps', async () => {
    const kept = await save({ 'a.txt': 'kept by run one', 'shared.txt': 'in both' });
    const removedRun = await save({ 'b.txt': 'only in the removed run', 'shared.txt': 'in both' });
    const pinned = await save({ 'c.txt': 'a dep pinned by run two; its own run is gone' });
    await finishedRun('one-run-1', [kept]);
    await finishedRun('two-run-1', [], [pinned]);
    // A save that never finished: a blob, no manifest.
    const unfinished = 'f'.repeat(64);
    await store.put(blobKey(unfinished), 'half a save');
    const keptBlobs = await blobsOf(kept);
    const onlyRemoved = (await blobsOf(removedRun)).filter((b) => !keptBlobs.includes(b));
    const later = Date.now() + 2 * HOUR;
    // Saved just before the collector runs: younger than the grace, so kept though nothing references it yet.
    const young = 'e'.repeat(64);
    await store.put(blobKey(young), 'a save under way');
    utimesSync(join(root, 'store', 'objects', ...blobKey(young).split('/')), new Date(later - 60_000), new Date(later - 60_000));

    // The first sweep only records what it found unreferenced; the next one a grace later removes it.
    const first = await gc({ nowMs: later });
    expect(first.removed).to.deep.equal([]);
    const candidates = first.candidates.map((c) => c.what);
    expect(candidates).to.include(manifestKey(removedRun)).and.include(blobKey(unfinished)).and.not.include(blobKey(young));
    expect(first.candidates.every((c) => c.goesAtMs === later + HOUR)).to.equal(true);
    expect(await store.head(manifestKey(removedRun))).to.not.equal(undefined);
    const report = await gc({ nowMs: later + HOUR });
    const gone = report.removed.map((x) => x.what);
    expect(gone).to.include(manifestKey(removedRun)).and.include(blobKey(unfinished));
    expect(gone).to.not.include(manifestKey(kept)).and.not.include(manifestKey(pinned)).and.not.include(blobKey(young));
    for (const b of [...(await blobsOf(kept)), ...(await blobsOf(pinned))]) expect(gone).to.not.include(blobKey(b));
    expect(onlyRemoved).to.have.length.greaterThan(0);
    for (const b of onlyRemoved) expect(gone).to.include(blobKey(b));
    expect(await store.head(manifestKey(removedRun))).to.equal(undefined);
    // What the live runs reference still restores, byte for byte.
    const out = tempDir('restore');
    dirs.push(out);
    await restoreTree(store, kept, out);
    expect(readFileSync(join(out, 'shared.txt'), 'utf8')).to.equal('in both');
    await restoreTree(store, pinned, join(out, 'dep'));
    expect(readFileSync(join(out, 'dep', 'c.txt'), 'utf8')).to.equal('a dep pinned by run two; its own run is gone');
  });

  it('settles a run that was recorded but never queued, and indexes it so that ps and rm see it', async () => {
    const record = { runName: 'lost-run-1', repoId: 'r1', workflow: 'w', jobId: 'j', submittedAt: new Date(Date.now() - 10 * 60_000).toISOString(), maxAttempts: 1, spec: { pinnedDeps: [] }, marksEnqueued: true };
    // The CLI died right after reserving the name: no index key, no message, no marker.
    await store.put(runKeys.record('r1', 'lost-run-1'), JSON.stringify(record));
    const report = await gc();
    expect(report.settled).to.deep.equal(['lost-run-1']);
    const [row] = await listRuns(store, 'r1');
    expect(row?.summary.runName).to.equal('lost-run-1');
    expect(row?.status).to.equal('failed');
    expect(row?.summary.ended?.reason).to.contain('never queued');
  });

  it('with storeEveryMs (the agents at start), sweeps the store at most that often', async () => {
    const stale = (sha: string) => {
      const path = join(root, 'store', 'objects', ...blobKey(sha).split('/'));
      utimesSync(path, new Date(Date.now() - 2 * HOUR), new Date(Date.now() - 2 * HOUR));
    };
    const t0 = Date.now();
    await store.put(blobKey('a'.repeat(64)), 'unreferenced');
    stale('a'.repeat(64));
    const first = await gc({ storeEveryMs: HOUR, nowMs: t0 });
    expect(first.removed).to.deep.equal([]);
    expect(first.candidates.map((x) => x.what)).to.deep.equal([blobKey('a'.repeat(64))]);
    await store.put(blobKey('b'.repeat(64)), 'unreferenced too');
    stale('b'.repeat(64));
    const second = await gc({ storeEveryMs: HOUR, nowMs: t0 + 30 * 60_000 });
    expect(second.removed).to.deep.equal([]);
    expect(second.notes.join('\n')).to.contain('store not swept: the last sweep was 30 min ago');
    // An hour on, the store is due again: a goes (a candidate for an hour), b waits its turn.
    const third = await gc({ storeEveryMs: HOUR, nowMs: t0 + HOUR + 60_000 });
    expect(third.removed.map((x) => x.what)).to.deep.equal([blobKey('a'.repeat(64))]);
    expect(third.candidates.map((x) => x.what)).to.deep.equal([blobKey('b'.repeat(64))]);
    expect((await gc({ nowMs: t0 + 2 * HOUR + 60_000 })).removed.map((x) => x.what)).to.deep.equal([blobKey('b'.repeat(64))]);
  });

  it('keeps a stale unreferenced blob that a save reuses after the mark, and it restores byte for byte', async () => {
    const files = { 'model.txt': 'weights saved by a run since removed', 'notes.txt': 'and a note' };
    const sha = await save(files);
    const [blob] = await blobsOf(sha);
    // The run that saved it was removed: nothing references the manifest or its blob, both hours old.
    await store.delete([manifestKey(sha)]);
    const hoursAgo = new Date(Date.now() - 3 * HOUR);
    utimesSync(join(root, 'store', 'objects', ...blobKey(blob!).split('/')), hoursAgo, hoursAgo);
    // A sweep an hour ago already found it unreferenced.
    const earlier = await gc({ nowMs: Date.now() - HOUR });
    expect(await store.head(blobKey(blob!)), 'a first sighting removes nothing').to.not.equal(undefined);
    expect(earlier.candidates.map((c) => c.what)).to.deep.equal([blobKey(blob!)]);
    // This sweep marks first; a new save that reuses the blob (same content) finishes while the sweep
    // lists what to remove, with its manifest and its run's artifacts.json.
    let saved: Promise<void> | undefined;
    const racing: Store = Object.assign(Object.create(store) as LocalStore, {
      list: async (prefix: string) => {
        if (prefix === 'manifests/' && !saved) {
          saved = (async () => {
            expect(await save(files)).to.equal(sha);
            await finishedRun('reuse-run-1', [sha]);
          })();
          await saved;
        }
        return store.list(prefix);
      },
    });
    const report = await collectGarbage({ store: racing, orphanGraceMs: 2 * 60_000, dryRun: false });
    expect(saved, 'the save ran between the mark and the removal').to.not.equal(undefined);
    expect(report.removed.map((x) => x.what)).to.not.include(blobKey(blob!));
    const out = tempDir('restore');
    dirs.push(out);
    await restoreTree(store, sha, out);
    for (const [p, c] of Object.entries(files)) expect(readFileSync(join(out, p), 'utf8')).to.equal(c);
  });

  it('keeps every blob while a job may still be saving', async () => {
    const orphanBlob = 'd'.repeat(64);
    await store.put(blobKey(orphanBlob), 'unreferenced');
    const later = Date.now() + 2 * HOUR;
    await store.put(runKeys.record('r1', 'busy-run-1'), JSON.stringify({ runName: 'busy-run-1', repoId: 'r1', workflow: 'w', jobId: 'j1', submittedAt: new Date().toISOString(), maxAttempts: 1, spec: { pinnedDeps: [] } }));
    await store.put(runKeys.attempt('r1', 'busy-run-1', 1), JSON.stringify({ attempt: 1, agentId: 'a1', host: 'h', startedAt: new Date().toISOString(), state: 'running', heartbeatAt: new Date(later - 5000).toISOString(), leaseMs: 30_000 }));
    const report = await gc({ nowMs: later });
    expect(report.removed).to.deep.equal([]);
    expect(report.notes.join('\n')).to.contain('run busy-run-1 may still be saving');
    expect(await store.head(blobKey(orphanBlob))).to.not.equal(undefined);
  });
});

describe('dstack gc: the command', () => {
  it('prints what it removed and the bytes freed; --dry-run removes nothing', async () => {
    const home = tempDir('home');
    const repo = makeRepo({ 'a.txt': 'a' });
    try {
      const ctx = await coordinatorContext({ configYaml: '', home, cwd: repo, compute: new ExternalAgents() });
      const job = join(home, 'local', 'work', 'local-gone', 'calm-owl-1-1-aaaaaa');
      mkdirSync(job, { recursive: true });
      writeFileSync(join(job, 'out.bin'), Buffer.alloc(2048));
      // A blob no run references, hours old: a candidate, which only a later sweep removes.
      const orphan = blobKey('c'.repeat(64));
      await ctx.store.put(orphan, Buffer.alloc(1024));
      const hoursAgo = new Date(Date.now() - 3 * HOUR);
      utimesSync(join(home, 'local', 'store', 'objects', ...orphan.split('/')), hoursAgo, hoursAgo);
      const before = Date.now();
      expect(await gcCommand(ctx, { dryRun: true })).to.equal(0);
      expect(ctx.out.text()).to.contain(`would remove work folder ${job} (2.0 KB)`).and.contain('Would free 2.0 KB in 1 item(s).');
      const line = new RegExp(`^candidate blob ${orphan} \\(1\\.0 KB\\): unreferenced since (\\S+), removed by a sweep from (\\S+)$`, 'm').exec(ctx.out.text());
      expect(line, ctx.out.text()).to.not.equal(null);
      const [since, goes] = [Date.parse(line?.[1] ?? ''), Date.parse(line?.[2] ?? '')];
      expect(since).to.be.within(before - 1000, Date.now());
      expect(goes - since).to.equal(HOUR);
      expect(await ctx.store.head(orphan)).to.not.equal(undefined);
      expect(existsSync(job)).to.equal(true);
      expect(await gcCommand(ctx, { dryRun: false })).to.equal(0);
      expect(ctx.out.text()).to.contain(`removed work folder ${job} (2.0 KB)`).and.contain('Freed 2.0 KB in 1 item(s).');
      expect(existsSync(job)).to.equal(false);
    } finally {
      removeAll(home, repo);
    }
  });
});
