import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeLogChunk } from '../../common/log-records.js';
import { LocalStore } from '../../common/local/local-store.js';
import type { Store } from '../../common/ports.js';
import { runKeys } from '../../common/runs.js';
import { logsApi, type LogsJson } from '../../coordinator/ui/api-logs.js';
import { LogsSchema } from '../../coordinator/ui/web/schemas.js';

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

/** The output an answer carries, per record, as the page decodes it (each record's bytes whole here). */
const texts = (a: LogsJson): string[] => a.records.map((r) => Buffer.from(r.data, 'base64').toString('utf8'));

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

  it("follows a running job by the chunks' known names from the first one, listing only after the final status", async () => {
    await chunk(1, 0, 'one\n');
    const first = await logsApi(store, REPO, RUN, null);
    expect(first).to.deep.include({ cursor: '0001-00000000.log', done: false });
    expect(texts(first)).to.deep.equal(['one\n']);
    // What the page parses the answer with.
    expect(LogsSchema.safeParse(first).success).to.equal(true);
    expect(store.lists).to.equal(0);
    // Nothing new yet: no listing, the same cursor.
    expect(await logsApi(store, REPO, RUN, first.cursor)).to.deep.include({ records: [], cursor: first.cursor, done: false });
    await chunk(1, 1, 'two\n');
    await chunk(1, 2, 'three\n');
    const next = await logsApi(store, REPO, RUN, first.cursor);
    expect(texts(next)).to.deep.equal(['two\n', 'three\n']);
    expect(next.cursor).to.equal('0001-00000002.log');
    expect(store.lists, 'listings while the run goes on').to.equal(0);
    await store.put(runKeys.final(REPO, RUN), '{}');
    const end = await logsApi(store, REPO, RUN, next.cursor);
    expect(end).to.deep.include({ records: [], done: true });
    expect(store.lists).to.equal(1);
  });

  it("finds a next attempt's output by its known name once that attempt has begun", async () => {
    await chunk(1, 0, 'first attempt\n');
    const first = await logsApi(store, REPO, RUN, null);
    await store.put(runKeys.attempt(REPO, RUN, 2), '{}');
    await chunk(2, 0, 'second attempt\n');
    const next = await logsApi(store, REPO, RUN, first.cursor);
    expect(texts(next)).to.deep.equal(['second attempt\n']);
    expect(next.cursor).to.equal('0002-00000000.log');
    expect(store.lists).to.equal(0);
  });

  it('shows a corrupt chunk as one dstack line, and refuses a cursor that is not a chunk name', async () => {
    await store.put(runKeys.logChunk(REPO, RUN, 1, 0), 'garbage');
    const r = await logsApi(store, REPO, RUN, null);
    expect(texts(r).join('')).to.match(/^dstack: log chunk .* is corrupt/);
    let status = 0;
    await logsApi(store, REPO, RUN, '../run.json').catch((e: { status: number }) => (status = e.status));
    expect(status).to.equal(400);
  });

  it('a run with no output yet costs no listing, however often the page asks', async () => {
    for (let i = 0; i < 5; i++) expect(await logsApi(store, REPO, RUN, null)).to.deep.include({ records: [], cursor: null, done: false });
    expect(store.lists).to.equal(0);
    await chunk(1, 0, 'late\n');
    expect(texts(await logsApi(store, REPO, RUN, null))).to.deep.equal(['late\n']);
  });

  it('goes on past a chunk the agent failed to store, while the run goes on', async () => {
    await chunk(1, 0, 'zero\n');
    const first = await logsApi(store, REPO, RUN, null);
    // The put of chunk 1 failed; the shipper stored the next ones under 2 and 3.
    await chunk(1, 2, 'two\n');
    await chunk(1, 3, 'three\n');
    const next = await logsApi(store, REPO, RUN, first.cursor);
    expect(texts(next)).to.deep.equal(['two\n', 'three\n']);
    expect(next).to.deep.include({ cursor: '0001-00000003.log', done: false });
  });

  it('sends the bytes of each record: a character split across two records is whole once joined', async () => {
    const euro = Buffer.from('1 €\n');
    await store.put(runKeys.logChunk(REPO, RUN, 1, 0), encodeLogChunk([{ atMs: 1, s: 'out', d: euro.subarray(0, 3) }]));
    await store.put(runKeys.logChunk(REPO, RUN, 1, 1), encodeLogChunk([{ atMs: 2, s: 'out', d: euro.subarray(3) }]));
    const a = await logsApi(store, REPO, RUN, null);
    expect(Buffer.concat(a.records.map((r) => Buffer.from(r.data, 'base64'))).toString('utf8')).to.equal('1 €\n');
  });
});
