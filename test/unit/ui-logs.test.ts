import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeLogChunk } from '../../common/log-records.js';
import { LocalStore } from '../../common/local/local-store.js';
import type { Store } from '../../common/ports.js';
import { runKeys } from '../../common/runs.js';
import { logsApi } from '../../coordinator/ui/api-logs.js';

const REPO = 'local/r';
const RUN = 'calm-otter-1';

/** A LocalStore that counts listings: what following a log costs on S3. */
function counting(store: Store): Store & { lists: number } {
  const counted = Object.assign(Object.create(store) as Store, { lists: 0 });
  counted.list = (...args: Parameters<Store['list']>) => {
    counted.lists += 1;
    return store.list(...args);
  };
  return counted;
}

describe('ui logs API', () => {
  let dir = '';
  let store: Store & { lists: number };
  const chunk = (attempt: number, seq: number, text: string): Promise<void> =>
    store.put(runKeys.logChunk(REPO, RUN, attempt, seq), encodeLogChunk([{ atMs: 1, s: 'out', d: Buffer.from(text) }]));

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dstack-ui-logs-'));
    store = counting(new LocalStore(dir));
    await store.put(runKeys.record(REPO, RUN), '{}');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("follows a running job by the chunks' known names, listing only to start and after the final status", async () => {
    await chunk(1, 0, 'one\n');
    const first = await logsApi(store, REPO, RUN, null);
    expect(first).to.deep.include({ cursor: '0001-00000000.log', done: false });
    expect(first.records.map((r) => r.text)).to.deep.equal(['one\n']);
    expect(store.lists).to.equal(1);
    // Nothing new yet: no listing, the same cursor.
    expect(await logsApi(store, REPO, RUN, first.cursor)).to.deep.include({ records: [], cursor: first.cursor, done: false });
    await chunk(1, 1, 'two\n');
    await chunk(1, 2, 'three\n');
    const next = await logsApi(store, REPO, RUN, first.cursor);
    expect(next.records.map((r) => r.text)).to.deep.equal(['two\n', 'three\n']);
    expect(next.cursor).to.equal('0001-00000002.log');
    expect(store.lists, 'listings while the run goes on').to.equal(1);
    await store.put(runKeys.final(REPO, RUN), '{}');
    const end = await logsApi(store, REPO, RUN, next.cursor);
    expect(end).to.deep.include({ records: [], done: true });
    expect(store.lists).to.equal(2);
  });

  it("finds a next attempt's output by listing once that attempt has begun", async () => {
    await chunk(1, 0, 'first attempt\n');
    const first = await logsApi(store, REPO, RUN, null);
    await store.put(runKeys.attempt(REPO, RUN, 2), '{}');
    await chunk(2, 0, 'second attempt\n');
    const next = await logsApi(store, REPO, RUN, first.cursor);
    expect(next.records.map((r) => r.text)).to.deep.equal(['second attempt\n']);
    expect(next.cursor).to.equal('0002-00000000.log');
  });

  it('shows a corrupt chunk as one dstack line, and refuses a cursor that is not a chunk name', async () => {
    await store.put(runKeys.logChunk(REPO, RUN, 1, 0), 'garbage');
    const r = await logsApi(store, REPO, RUN, null);
    expect(r.records.map((x) => x.text).join('')).to.match(/^dstack: log chunk .* is corrupt/);
    let status = 0;
    await logsApi(store, REPO, RUN, '../run.json').catch((e: { status: number }) => (status = e.status));
    expect(status).to.equal(400);
  });
});
