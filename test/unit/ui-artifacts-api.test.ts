import { expect } from 'chai';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { saveTree } from '../../common/artifacts/save.js';
import { LocalStore } from '../../common/local/local-store.js';
import { runKeys } from '../../common/runs.js';
import { treeApi } from '../../coordinator/ui/api-artifacts.js';
import { removeAll, tempDir } from '../support/cli.js';
import { CountingStore, attemptOf, seedAttempt, seedRun } from '../support/ui-data.js';

const REPO = 'local/r';
const RUN = 'calm-otter-1';

describe('ui artifacts API: what a tree costs', () => {
  let dir: string;
  let store: CountingStore;

  beforeEach(async () => {
    dir = tempDir('ui-artifacts');
    store = new CountingStore(new LocalStore(join(dir, 'store')));
    const src = join(dir, 'out');
    mkdirSync(join(src, 'sub'), { recursive: true });
    writeFileSync(join(src, 'model.bin'), 'weights');
    writeFileSync(join(src, 'sub', 'notes.txt'), 'hello');
    await seedRun(store, REPO, { runName: RUN, submittedAt: '2026-11-25T08:00:00.000Z' });
    await seedAttempt(store, REPO, RUN, attemptOf(1, '2026-11-25T08:00:00.000Z'));
    const saved = await saveTree(store, src);
    await store.put(runKeys.artifacts(REPO, RUN), JSON.stringify({ artifacts: [{ path: 'out', manifestSha: saved.manifestSha, files: saved.files, sizeBytes: saved.sizeBytes }], savedAt: '2026-11-25T08:01:00.000Z', complete: true }));
    store.reset();
  });
  afterEach(() => removeAll(dir));

  it("lists an artifact's entries from its artifacts index and manifest, without listing the run", async () => {
    const tree = await treeApi(store, REPO, RUN, 0);
    expect(tree.path).to.equal('out');
    expect(tree.entries.map((e) => [e.path, e.type, e.sizeBytes]).sort()).to.deep.equal([['model.bin', 'file', 7], ['sub', 'dir', 0], ['sub/notes.txt', 'file', 5]]);
    expect(store.lists).to.deep.equal([]);
    expect(store.gets.filter((k) => k.includes(`/runs/${RUN}/`))).to.deep.equal([runKeys.artifacts(REPO, RUN)]);
  });

  it('an artifact index that does not exist is a 404', async () => {
    const status = await treeApi(store, REPO, RUN, 1).then(() => 200, (e: { status?: number }) => e.status);
    expect(status).to.equal(404);
  });
});
