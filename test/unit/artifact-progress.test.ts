import { expect } from 'chai';
import { mkdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import FakeTimers from '@sinonjs/fake-timers';
import { ArtifactSaver, restoreDeps } from '../../agent/artifacts.js';
import { saveTree } from '../../common/artifacts/save.js';
import type { Store } from '../../common/ports.js';
import { bashSpec } from '../support/job-spec.js';
import { withTempStore } from '../support/temp-store.js';

/** The store, on which every blob read or written takes `msPerCall` of the fake clock. */
function slowStore(store: Store, clock: ReturnType<typeof FakeTimers.install>, msPerCall: number): Store {
  return {
    put: (k, d, o) => (clock.tick(msPerCall), store.put(k, d, o)),
    head: (k) => store.head(k),
    get: (k) => (k.includes('blobs/') && clock.tick(msPerCall), store.get(k)),
    putStream: (k, b, o) => (clock.tick(msPerCall), store.putStream(k, b, o)),
    getStream: (k) => store.getStream(k),
    list: (p) => store.list(p),
    delete: (k) => store.delete(k),
    touch: (k) => store.touch(k),
  };
}

describe("artifact progress in a job's log", () => {
  const t = withTempStore('artprog', 'store');
  let clock: ReturnType<typeof FakeTimers.install>;
  beforeEach(() => (clock = FakeTimers.install({ toFake: ['Date'] })));
  afterEach(() => clock.uninstall());

  /** 20 files of 300 KiB (each its own blob, not packed) in `dir`. */
  function makeTree(dir: string): void {
    mkdirSync(dir, { recursive: true });
    for (let i = 0; i < 20; i++) writeFileSync(join(dir, `f${i}.bin`), randomBytes(300 * 1024));
  }

  it('a dep restore that lasts says bytes, rate and time left every 10% or 10 s, and what it moved at the end', async () => {
    makeTree(join(t.dir, 'src'));
    const saved = await saveTree(t.store, join(t.dir, 'src'));
    const spec = bashSpec([], { pinnedDeps: [{ kind: 'workflow', name: 'prep', repoId: 'local/test', runName: 'prep-1', artifacts: [{ path: 'data', manifestSha: saved.manifestSha }] }] });
    const lines: string[] = [];
    await restoreDeps(slowStore(t.store, clock, 1000), spec, join(t.dir, 'code'), (l) => lines.push(l));
    const progress = lines.filter((l) => /\(\d+%\)/.test(l));
    expect(progress.length).to.be.within(1, 2);
    for (const l of progress) expect(l).to.match(/^dstack: restoring data: [\d.]+ MB of 5\.9 MB \(\d+%\), [\d.]+ KB\/s, \d+ s left\n$/);
    expect(lines.at(-2)).to.match(/^dstack: restoring data: 5\.9 MB in 2\d s, [\d.]+ KB\/s\n$/);
    expect(lines.at(-1)).to.equal('dstack: restored data (20 files) from workflow prep (run prep-1)\n');
  });

  it('a quick restore says only what it restored', async () => {
    makeTree(join(t.dir, 'src'));
    const saved = await saveTree(t.store, join(t.dir, 'src'));
    const spec = bashSpec([], { pinnedDeps: [{ kind: 'workflow', name: 'prep', repoId: 'local/test', runName: 'prep-1', artifacts: [{ path: 'data', manifestSha: saved.manifestSha }] }] });
    const lines: string[] = [];
    await restoreDeps(t.store, spec, join(t.dir, 'code'), (l) => lines.push(l));
    expect(lines).to.deep.equal(['dstack: restored data (20 files) from workflow prep (run prep-1)\n']);
  });

  it('a final save that lasts says how far it is, with the total of the files to save', async () => {
    const code = join(t.dir, 'code');
    makeTree(join(code, 'out'));
    const spec = bashSpec([], { artifacts: [{ path: 'out', mount: false }] });
    const lines: string[] = [];
    await new ArtifactSaver(slowStore(t.store, clock, 1000), spec, code).save(true, (l) => lines.push(l));
    expect(lines.filter((l) => /\(\d+%\)/.test(l))[0]).to.match(/^dstack: saving out: [\d.]+ MB of 5\.9 MB \(\d+%\), [\d.]+ KB\/s, \d+ s left\n$/);
    expect(lines.at(-1)).to.match(/^dstack: saving out: 5\.9 MB in \d+ s, [\d.]+ KB\/s\n$/);
  });
});
