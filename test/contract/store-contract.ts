import { expect } from 'chai';
import { Readable } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArtifactError, CHUNK_BYTES, blobKey, sha256 } from '../../common/artifacts/manifest.js';
import { restoreTree } from '../../common/artifacts/restore.js';
import { saveTree } from '../../common/artifacts/save.js';
import { ConflictError, NotFoundError } from '../../common/errors.js';
import type { Store } from '../../common/ports.js';

export interface StoreFixture {
  store: Store;
  cleanup(): Promise<void>;
}

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** The Store contract: every implementation must pass it. */
export function storeContract(name: string, make: () => Promise<StoreFixture>): void {
  describe(`Store contract: ${name}`, function () {
    this.timeout(20_000);
    let fx: StoreFixture;
    beforeEach(async () => {
      fx = await make();
    });
    afterEach(async () => {
      await fx.cleanup();
    });

    it('puts and gets objects; a missing key is undefined', async () => {
      await fx.store.put('a/b/c.json', '{"x":1}');
      expect((await fx.store.get('a/b/c.json'))?.toString()).to.equal('{"x":1}');
      expect(await fx.store.get('a/b/missing.json')).to.equal(undefined);
      expect(await fx.store.head('a/b/c.json')).to.deep.equal({ key: 'a/b/c.json', sizeBytes: 7 });
      expect(await fx.store.head('a/b/missing.json')).to.equal(undefined);
      expect(await fx.store.head('a/b')).to.equal(undefined);
      await fx.store.put('a/b/c.json', 'replaced');
      expect((await fx.store.get('a/b/c.json'))?.toString()).to.equal('replaced');
    });

    it('create-if-absent succeeds once and then conflicts, keeping the first value', async () => {
      await fx.store.put('runs/x/run.json', 'first', { ifAbsent: true });
      let err: unknown;
      await fx.store.put('runs/x/run.json', 'second', { ifAbsent: true }).catch((e: unknown) => (err = e));
      expect(err).to.be.instanceOf(ConflictError);
      expect((await fx.store.get('runs/x/run.json'))?.toString()).to.equal('first');
    });

    it('lets exactly one of many concurrent create-if-absent writers win', async () => {
      const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => fx.store.put('race/key', `w${i}`, { ifAbsent: true })));
      expect(results.filter((r) => r.status === 'fulfilled')).to.have.length(1);
      expect(results.filter((r) => r.status === 'rejected' && r.reason instanceof ConflictError)).to.have.length(9);
    });

    it('lists by prefix, sorted, including a partial last segment', async () => {
      for (const k of ['p/b/2', 'p/a/1', 'p/ab/3', 'q/1', 'p/a/0']) await fx.store.put(k, k);
      expect((await fx.store.list('p/a/')).map((o) => o.key)).to.deep.equal(['p/a/0', 'p/a/1']);
      expect((await fx.store.list('p/a')).map((o) => o.key)).to.deep.equal(['p/a/0', 'p/a/1', 'p/ab/3']);
      expect((await fx.store.list('p/')).map((o) => o.key)).to.deep.equal(['p/a/0', 'p/a/1', 'p/ab/3', 'p/b/2']);
      expect((await fx.store.list('p/b/2'))[0]).to.deep.include({ key: 'p/b/2', sizeBytes: 5 });
      expect(await fx.store.list('nothing/')).to.deep.equal([]);
    });

    it('lists only the keys after startAfter, across folders and pages', async () => {
      for (const k of ['s/a/1', 's/a/2', 's/b/1', 's/c', 't/1']) await fx.store.put(k, k);
      const keys = async (prefix: string, startAfter: string): Promise<string[]> => (await fx.store.list(prefix, { startAfter })).map((o) => o.key);
      expect(await keys('s/', 's/a/1')).to.deep.equal(['s/a/2', 's/b/1', 's/c']);
      // A key that does not exist still bounds the listing, as a cursor would.
      expect(await keys('s/', 's/a/15')).to.deep.equal(['s/a/2', 's/b/1', 's/c']);
      expect(await keys('s/', 's/b')).to.deep.equal(['s/b/1', 's/c']);
      expect(await keys('s/', 's/c')).to.deep.equal([]);
      // Before the prefix: everything under it; the prefix still holds.
      expect(await keys('s/', 'a')).to.deep.equal(['s/a/1', 's/a/2', 's/b/1', 's/c']);
      expect(await keys('s/a/', 's/a/1')).to.deep.equal(['s/a/2']);
      // Past one page of S3 (1,000 keys): the listing goes on after startAfter, no key twice.
      const many = Array.from({ length: 1100 }, (_, i) => `m/${String(i).padStart(5, '0')}`);
      for (let i = 0; i < many.length; i += 100) await Promise.all(many.slice(i, i + 100).map((k) => fx.store.put(k, '')));
      expect(await keys('m/', many[49] ?? '')).to.deep.equal(many.slice(50));
    });

    it('list tells when each object was written, to the second', async () => {
      const before = Date.now();
      await fx.store.put('age/x', 'x');
      const [o] = await fx.store.list('age/');
      // S3 keeps whole seconds; clocks of the store and the test may differ a little.
      expect(o?.modifiedAtMs).to.be.a('number').within(before - 5000, Date.now() + 5000);
    });

    it('touch keeps the bytes and marks the object written now; a missing key is false and stays missing', async () => {
      await fx.store.put('touch/x', 'same bytes');
      const before = Date.now();
      expect(await fx.store.touch('touch/x')).to.equal(true);
      expect((await fx.store.get('touch/x'))?.toString()).to.equal('same bytes');
      const [o] = await fx.store.list('touch/');
      expect(o).to.deep.include({ key: 'touch/x', sizeBytes: 10 });
      expect(o?.modifiedAtMs).to.be.a('number').within(before - 5000, Date.now() + 5000);
      expect(await fx.store.touch('touch/missing')).to.equal(false);
      expect(await fx.store.head('touch/missing')).to.equal(undefined);
    });

    it('streams a large object in and out unchanged', async () => {
      const data = randomBytes(3 * 1024 * 1024 + 17);
      await fx.store.putStream('big/blob', Readable.from([data.subarray(0, 1000), data.subarray(1000)]));
      const back = await readAll(await fx.store.getStream('big/blob'));
      expect(createHash('sha256').update(back).digest('hex')).to.equal(createHash('sha256').update(data).digest('hex'));
    });

    it('never shows a partial object when a streamed write fails', async () => {
      const failing = new Readable({
        read() {
          this.push(Buffer.alloc(64 * 1024, 1));
          this.destroy(new Error('connection dropped'));
        },
      });
      let err: unknown;
      await fx.store.putStream('half/written', failing).catch((e: unknown) => (err = e));
      expect(err).to.be.instanceOf(Error);
      expect(await fx.store.get('half/written')).to.equal(undefined);
      expect(await fx.store.list('half/')).to.deep.equal([]);
    });

    it('getStream of a missing key is NotFoundError', async () => {
      let err: unknown;
      await fx.store.getStream('no/such').catch((e: unknown) => (err = e));
      expect(err).to.be.instanceOf(NotFoundError);
    });

    it('deletes objects, ignoring missing ones', async () => {
      await fx.store.put('d/1', '1');
      await fx.store.put('d/2', '2');
      await fx.store.delete(['d/1', 'd/missing']);
      expect((await fx.store.list('d/')).map((o) => o.key)).to.deep.equal(['d/2']);
    });

    it('rejects keys that could escape', async () => {
      for (const key of ['../x', 'a/../b', '/abs', 'a//b', '']) {
        let err: unknown;
        await fx.store.put(key, 'x').catch((e: unknown) => (err = e));
        expect(err, key).to.be.instanceOf(Error);
      }
    });

    it('an artifact of several chunks comes back byte for byte; a corrupt chunk fails the restore and none of its bytes reach the file; a missing one is named', async function () {
      this.timeout(60_000);
      const dir = mkdtempSync(join(tmpdir(), 'dstack-store-art-'));
      try {
        // Small, as the emulator keeps objects in memory: two whole chunks and a short last one.
        const big = randomBytes(CHUNK_BYTES * 2 + 4321);
        mkdirSync(join(dir, 'src'));
        writeFileSync(join(dir, 'src', 'model.bin'), big);
        const saved = await saveTree(fx.store, join(dir, 'src'));
        await restoreTree(fx.store, saved.manifestSha, join(dir, 'out'));
        expect(readFileSync(join(dir, 'out', 'model.bin')).equals(big)).to.equal(true);

        const second = sha256(big.subarray(CHUNK_BYTES, 2 * CHUNK_BYTES));
        const tampered = Buffer.from(big.subarray(CHUNK_BYTES, 2 * CHUNK_BYTES));
        tampered[100] = (tampered[100] ?? 0) ^ 1;
        await fx.store.put(blobKey(second), tampered);
        const err = await restoreTree(fx.store, saved.manifestSha, join(dir, 'bad')).then(() => undefined, (e: unknown) => e);
        expect(err).to.be.instanceOf(ArtifactError);
        expect((err as Error).message).to.include(`blob ${second} is corrupt (hash mismatch)`);
        // The file was sized up front: the tampered chunk's range holds zeros, not its bytes.
        const left = readFileSync(join(dir, 'bad', 'model.bin')).subarray(CHUNK_BYTES, 2 * CHUNK_BYTES);
        expect(left.equals(Buffer.alloc(CHUNK_BYTES))).to.equal(true);

        await fx.store.delete([blobKey(second)]);
        const gone = await restoreTree(fx.store, saved.manifestSha, join(dir, 'gone')).then(() => undefined, (e: unknown) => e);
        expect((gone as Error).message).to.include(`blob ${second} is missing from the store`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}
