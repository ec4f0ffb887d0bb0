import { expect } from 'chai';
import { chmodSync, lstatSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ArtifactError, CHUNK_BYTES, blobKey, encodeManifest, manifestKey, sha256 } from '../../common/artifacts/manifest.js';
import { hashChunk } from '../../common/artifacts/hash-pool.js';
import { CHUNK_SLOTS } from '../../common/artifacts/chunk-slots.js';
import { readManifest, restoreTree } from '../../common/artifacts/restore.js';
import { saveTree } from '../../common/artifacts/save.js';
import type { Store } from '../../common/ports.js';
import { LocalStore } from '../../common/local/local-store.js';
import { withTempStore } from '../support/temp-store.js';

/** The store, with the most blob reads (get, or readInto as LocalStore and S3Store have) it saw outstanding at once. */
function countingGets(store: LocalStore, mode: 'readInto' | 'get'): { store: Store; maxInFlight: () => number } {
  let now = 0;
  let max = 0;
  const counted = async <T>(key: string, read: () => Promise<T>): Promise<T> => {
    if (!key.startsWith('blobs/')) return read();
    max = Math.max(max, ++now);
    try {
      return await read();
    } finally {
      now--;
    }
  };
  const get = (key: string): Promise<Buffer | undefined> => counted(key, () => store.get(key));
  // Without readInto, as a remote store is: every chunk comes from get.
  const wrapped: Store =
    mode === 'readInto'
        ? Object.assign(Object.create(store) as LocalStore, { get, readInto: (key: string, buf: Buffer) => counted(key, () => store.readInto(key, buf)) })
        : { put: (k, d, o) => store.put(k, d, o), head: (k) => store.head(k), get, putStream: (k, b) => store.putStream(k, b), getStream: (k) => store.getStream(k), list: (p) => store.list(p), delete: (k) => store.delete(k), touch: (k) => store.touch(k) };
  return { store: wrapped, maxInFlight: () => max };
}

describe('artifacts: large files move in parallel chunks, every chunk verified', () => {
  const t = withTempStore('art-par', 'store');

  it('hashes a chunk on the hashing threads to the same sha256, and hands back the same bytes', async () => {
    for (const size of [0, 1000, CHUNK_BYTES, CHUNK_BYTES - 7]) {
      const data = Buffer.allocUnsafeSlow(size);
      randomBytes(size).copy(data);
      const want = sha256(data);
      const copy = Buffer.from(data);
      const got = await hashChunk(data);
      expect(got.sha).to.equal(want);
      expect(got.data.equals(copy)).to.equal(true);
    }
    // Many at once (more than there are threads) all come back right.
    const many = Array.from({ length: 6 }, (_, i) => Buffer.alloc(CHUNK_BYTES, i));
    const shas = many.map((b) => sha256(b));
    expect((await Promise.all(many.map((b) => hashChunk(b)))).map((h) => h.sha)).to.deep.equal(shas);
  });

  it('an artifact path the job never made is saved as an empty artifact (the corpus\'s `output` of a job that wrote none)', async () => {
    const saved = await saveTree(t.store, join(t.dir, 'never-made'));
    expect(saved).to.include({ files: 0, sizeBytes: 0 });
    expect((await readManifest(t.store, saved.manifestSha)).entries).to.deep.equal([]);
  });

  it("restores a large file by fetching several of its chunks at once, each written at its offset", async () => {
    const src = join(t.dir, 'src');
    mkdirSync(src);
    const big = randomBytes(CHUNK_BYTES * 5 + 4321);
    writeFileSync(join(src, 'model.bin'), big);
    const saved = await saveTree(t.store, src);
    for (const mode of ['readInto', 'get'] as const) {
      const counting = countingGets(t.store, mode);
      const out = join(t.dir, `out-${mode}`);
      await restoreTree(counting.store, saved.manifestSha, out);
      expect(counting.maxInFlight()).to.be.greaterThan(1);
      expect(readFileSync(join(out, 'model.bin')).equals(big)).to.equal(true);
    }
  });

  it('detects a corrupt chunk in the middle of a large file', async () => {
    const src = join(t.dir, 'src');
    mkdirSync(src);
    const big = randomBytes(CHUNK_BYTES * 3);
    writeFileSync(join(src, 'model.bin'), big);
    const saved = await saveTree(t.store, src);
    const middle = sha256(big.subarray(CHUNK_BYTES, 2 * CHUNK_BYTES));
    const tampered = Buffer.from(big.subarray(CHUNK_BYTES, 2 * CHUNK_BYTES));
    tampered[100] = (tampered[100] ?? 0) ^ 1;
    await t.store.put(blobKey(middle), tampered);
    let err: unknown;
    await restoreTree(t.store, saved.manifestSha, join(t.dir, 'out')).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(ArtifactError);
    expect((err as Error).message).to.include(`blob ${middle} is corrupt (hash mismatch)`);
  });

  it('refuses a crafted manifest whose chunk before the last is not a whole chunk', async () => {
    const a = Buffer.from('short');
    const b = Buffer.from('tail');
    await t.store.put(blobKey(sha256(a)), a);
    await t.store.put(blobKey(sha256(b)), b);
    const chunks = [sha256(a), sha256(b)];
    const body = encodeManifest({ version: 1, entries: [{ path: 'f', type: 'file', mode: 0o644, sizeBytes: 9, chunks, sha256: sha256(chunks.join('\n')) }], files: 1, sizeBytes: 9 });
    await t.store.put(manifestKey(sha256(body)), body);
    let err: unknown;
    await restoreTree(t.store, sha256(body), join(t.dir, 'out')).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(ArtifactError);
    expect((err as Error).message).to.include('is not a whole chunk');
  });

  it('replaces a link already at a file\'s own name (packed or chunked) with the file, never writing through it', async () => {
    const src = join(t.dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'small.txt'), 'mine');
    const big = randomBytes(CHUNK_BYTES + 10);
    writeFileSync(join(src, 'big.bin'), big);
    const saved = await saveTree(t.store, src);
    const outside = join(t.dir, 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'a'), 'precious');
    writeFileSync(join(outside, 'b'), 'precious');
    const out = join(t.dir, 'out');
    mkdirSync(out);
    symlinkSync(join(outside, 'a'), join(out, 'small.txt'));
    symlinkSync(join(outside, 'b'), join(out, 'big.bin'));
    await restoreTree(t.store, saved.manifestSha, out);
    expect(readFileSync(join(outside, 'a'), 'utf8')).to.equal('precious');
    expect(readFileSync(join(outside, 'b'), 'utf8')).to.equal('precious');
    expect(lstatSync(join(out, 'small.txt')).isFile()).to.equal(true);
    expect(readFileSync(join(out, 'small.txt'), 'utf8')).to.equal('mine');
    expect(readFileSync(join(out, 'big.bin')).equals(big)).to.equal(true);
  });

  it('holds at most CHUNK_SLOTS chunks at once across concurrent saves and restores of large files', async () => {
    let now = 0;
    let max = 0;
    const counted = async <T>(key: string, size: number, op: () => Promise<T>): Promise<T> => {
      if (!key.startsWith('blobs/') || size < 1024 * 1024) return op();
      max = Math.max(max, ++now);
      try {
        return await op();
      } finally {
        now--;
      }
    };
    const store = Object.create(t.store) as LocalStore;
    store.put = (key, data, o) => counted(key, data.length, () => t.store.put(key, data, o));
    store.readInto = (key, buf) => counted(key, buf.length, () => t.store.readInto(key, buf));
    const dirs = [0, 1, 2, 3].map((i) => {
      const dir = join(t.dir, `src${i}`);
      mkdirSync(dir);
      writeFileSync(join(dir, 'model.bin'), randomBytes(CHUNK_BYTES * 3 + i));
      return dir;
    });
    const saved = await Promise.all(dirs.map((d) => saveTree(store, d)));
    expect(max).to.be.within(2, CHUNK_SLOTS);
    max = 0;
    await Promise.all(saved.map((s, i) => restoreTree(store, s.manifestSha, join(t.dir, `out${i}`))));
    expect(max).to.be.within(2, CHUNK_SLOTS);
    dirs.forEach((d, i) => expect(readFileSync(join(t.dir, `out${i}`, 'model.bin')).equals(readFileSync(join(d, 'model.bin')))).to.equal(true));
  });

  it('a failed chunk ends the restore only after every chunk already fetching has ended, and starts no more', async () => {
    const src = join(t.dir, 'src');
    mkdirSync(src);
    const a = randomBytes(CHUNK_BYTES + 10);
    writeFileSync(join(src, 'a.bin'), a);
    // More chunks than are fetched at once (CHUNKS_IN_FLIGHT, 6), so that some have not started when a.bin's fails.
    writeFileSync(join(src, 'b.bin'), randomBytes(CHUNK_BYTES * 7));
    const saved = await saveTree(t.store, src);
    const bad = blobKey(sha256(a.subarray(0, CHUNK_BYTES)));
    let started = 0;
    let ended = 0;
    const slow: Store = Object.assign(Object.create(t.store) as LocalStore, {
      readInto: async (key: string, buf: Buffer) => {
        if (!key.startsWith('blobs/')) return t.store.readInto(key, buf);
        started++;
        try {
          if (key === bad) throw new Error('the fetch of a.bin failed');
          await new Promise((r) => setTimeout(r, 150));
          return await t.store.readInto(key, buf);
        } finally {
          ended++;
        }
      },
    });
    const err = await restoreTree(slow, saved.manifestSha, join(t.dir, 'out')).then(() => undefined, (e: unknown) => e);
    expect((err as Error).message).to.equal('the fetch of a.bin failed');
    expect(started).to.be.greaterThan(1);
    expect(started).to.be.below(9);
    expect(ended).to.equal(started);
    // Nothing starts after the restore has ended.
    await new Promise((r) => setTimeout(r, 200));
    expect(started).to.equal(ended);
  });

  it('restored small files get their saved modes, whatever file was there before and whatever the umask', async () => {
    const src = join(t.dir, 'src');
    mkdirSync(src);
    for (const [name, mode] of [['open.sh', 0o777], ['run.sh', 0o755], ['secret', 0o600], ['ro.txt', 0o444]] as const) {
      writeFileSync(join(src, name), name);
      chmodSync(join(src, name), mode);
    }
    const saved = await saveTree(t.store, src);
    const out = join(t.dir, 'out');
    mkdirSync(out);
    writeFileSync(join(out, 'run.sh'), 'old');
    chmodSync(join(out, 'run.sh'), 0o600);
    await restoreTree(t.store, saved.manifestSha, out);
    const modes = Object.fromEntries(['open.sh', 'run.sh', 'secret', 'ro.txt'].map((n) => [n, statSync(join(out, n)).mode & 0o777]));
    expect(modes).to.deep.equal({ 'open.sh': 0o777, 'run.sh': 0o755, secret: 0o600, 'ro.txt': 0o444 });
    expect(readFileSync(join(out, 'run.sh'), 'utf8')).to.equal('run.sh');
  });

  it('checks every packed file of a large pack against its own hash (on the hashing threads)', async () => {
    const src = join(t.dir, 'src');
    mkdirSync(src);
    for (let i = 0; i < 200; i++) writeFileSync(join(src, `f${String(i).padStart(3, '0')}.bin`), randomBytes(10 * 1024));
    const saved = await saveTree(t.store, src);
    await restoreTree(t.store, saved.manifestSha, join(t.dir, 'ok'));
    expect(readFileSync(join(t.dir, 'ok', 'f123.bin')).equals(readFileSync(join(src, 'f123.bin')))).to.equal(true);
    // The same manifest, but one file's hash is not that of its bytes in the (genuine) pack.
    const manifest = await readManifest(t.store, saved.manifestSha);
    const victim = manifest.entries.find((e) => e.path === 'f123.bin');
    if (!victim) throw new Error('no f123.bin');
    victim.sha256 = sha256('something else');
    const body = encodeManifest(manifest);
    await t.store.put(manifestKey(sha256(body)), body);
    let err: unknown;
    await restoreTree(t.store, sha256(body), join(t.dir, 'out')).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(ArtifactError);
    expect((err as Error).message).to.equal(`\`f123.bin\`: its bytes in pack ${victim.pack?.sha ?? ''} do not match its hash`);
  });
});
