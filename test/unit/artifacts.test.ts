import { expect } from 'chai';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ArtifactError, blobKey, encodeManifest, manifestKey, sha256, CHUNK_BYTES, PACK_FILE_MAX_BYTES, type Manifest } from '../../common/artifacts/manifest.js';
import { readManifest, restoreTree } from '../../common/artifacts/restore.js';
import { HashCache, saveTree } from '../../common/artifacts/save.js';
import { LocalStore } from '../../common/local/local-store.js';
import { withTempStore } from '../support/temp-store.js';

async function putManifest(store: LocalStore, m: Manifest): Promise<string> {
  const body = encodeManifest(m);
  await store.put(manifestKey(sha256(body)), body);
  return sha256(body);
}

describe('artifacts: content-addressed save and restore', () => {
  const t = withTempStore('art', 'store');

  it('round-trips files, modes, empty dirs, symlinks and a multi-chunk file byte for byte', async () => {
    const src = join(t.dir, 'src');
    mkdirSync(join(src, 'sub', 'empty'), { recursive: true });
    writeFileSync(join(src, 'a.txt'), 'alpha\n');
    writeFileSync(join(src, 'sub', 'run.sh'), '#!/bin/sh\n');
    chmodSync(join(src, 'sub', 'run.sh'), 0o750);
    const big = randomBytes(CHUNK_BYTES * 2 + 123);
    writeFileSync(join(src, 'big.bin'), big);
    writeFileSync(join(src, 'empty.txt'), '');
    symlinkSync('sub/run.sh', join(src, 'link'));
    const saved = await saveTree(t.store, src);
    expect(saved).to.include({ files: 4, sizeBytes: 6 + 10 + big.length });
    const out = join(t.dir, 'out');
    await restoreTree(t.store, saved.manifestSha, out);
    expect(readFileSync(join(out, 'a.txt'), 'utf8')).to.equal('alpha\n');
    expect(sha256(readFileSync(join(out, 'big.bin')))).to.equal(sha256(big));
    expect(statSync(join(out, 'sub', 'run.sh')).mode & 0o777).to.equal(0o750);
    expect(statSync(join(out, 'sub', 'empty')).isDirectory()).to.equal(true);
    expect(readFileSync(join(out, 'empty.txt'), 'utf8')).to.equal('');
    expect(readlinkSync(join(out, 'link'))).to.equal('sub/run.sh');
  });

  it('stores each distinct content once, and an unchanged re-save uploads nothing', async () => {
    const src = join(t.dir, 'src');
    mkdirSync(src);
    for (let i = 0; i < 5; i++) writeFileSync(join(src, `same${i}.txt`), 'identical content');
    writeFileSync(join(src, 'other.txt'), 'different');
    const cache = new HashCache();
    const first = await saveTree(t.store, src, { cache });
    // Small files share one pack, which holds each distinct content once.
    expect((await t.store.list('blobs/')).length).to.equal(1);
    expect(first.uploadedBytes).to.equal('identical content'.length + 'different'.length);
    const again = await saveTree(t.store, src, { cache });
    expect(again.uploadedBytes).to.equal(0);
    expect(again.manifestSha).to.equal(first.manifestSha);
    const fresh = await saveTree(t.store, src);
    expect(fresh.uploadedBytes).to.equal(0);
    writeFileSync(join(src, 'other.txt'), 'changed');
    const changed = await saveTree(t.store, src, { cache });
    expect(changed.uploadedBytes).to.equal('changed'.length);
    expect(changed.manifestSha).to.not.equal(first.manifestSha);
  });

  it('detects a corrupt blob on restore instead of writing it silently', async () => {
    const src = join(t.dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'model.pt'), 'weights');
    const saved = await saveTree(t.store, src);
    await t.store.put(blobKey(sha256('weights')), 'tampered');
    let err: unknown;
    await restoreTree(t.store, saved.manifestSha, join(t.dir, 'out')).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(ArtifactError);
    expect((err as Error).message).to.include('corrupt (hash mismatch)');
  });

  it('packs thousands of small files into a few blobs, and restores them byte for byte', async () => {
    const src = join(t.dir, 'src');
    const want = new Map<string, Buffer>();
    for (let d = 0; d < 10; d++) {
      mkdirSync(join(src, `d${d}`), { recursive: true });
      for (let f = 0; f < 150; f++) {
        const data = randomBytes(10 * 1024 + f);
        want.set(`d${d}/f${f}.bin`, data);
        writeFileSync(join(src, `d${d}`, `f${f}.bin`), data);
      }
    }
    const big = randomBytes(PACK_FILE_MAX_BYTES + 1);
    writeFileSync(join(src, 'big.bin'), big);
    const saved = await saveTree(t.store, src);
    expect(saved.files).to.equal(1501);
    // About 15 MiB of small files: two packs, plus the one file over the packing limit.
    expect((await t.store.list('blobs/')).length).to.equal(3);
    const out = join(t.dir, 'out');
    await restoreTree(t.store, saved.manifestSha, out);
    for (const [path, data] of want) expect(readFileSync(join(out, path)).equals(data), path).to.equal(true);
    expect(readFileSync(join(out, 'big.bin')).equals(big)).to.equal(true);
    // A new job re-saving the same tree makes the same packs and uploads nothing.
    expect((await saveTree(t.store, src)).uploadedBytes).to.equal(0);
  });

  it('detects a corrupt pack, and a packed file whose bytes do not match its hash', async () => {
    const src = join(t.dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'a.txt'), 'alpha');
    writeFileSync(join(src, 'b.txt'), 'beta');
    const saved = await saveTree(t.store, src);
    const [pack] = await t.store.list('blobs/');
    await t.store.put(pack!.key, 'alphaBETA');
    const err = await restoreTree(t.store, saved.manifestSha, join(t.dir, 'out')).catch((e: unknown) => e);
    expect((err as Error).message).to.match(/pack [0-9a-f]{64} is corrupt \(hash mismatch\)/);
    // A crafted manifest pointing past the end of a genuine pack.
    await t.store.put(blobKey(sha256('alphabeta')), 'alphabeta');
    const entry = { path: 'x.txt', type: 'file' as const, mode: 0o644, sizeBytes: 5, sha256: sha256('alpha'), pack: { sha: sha256('alphabeta'), offset: 7 } };
    const sha = await putManifest(t.store, { version: 1, entries: [entry], files: 1, sizeBytes: 5 });
    const err2 = await restoreTree(t.store, sha, join(t.dir, 'out2')).catch((e: unknown) => e);
    expect(err2).to.be.instanceOf(ArtifactError);
    expect((err2 as Error).message).to.equal(`\`x.txt\`: its bytes in pack ${sha256('alphabeta')} do not match its hash`);
  });

  const file = (path: string): Manifest['entries'][number] => ({ path, type: 'file', mode: 0o644, sizeBytes: 1, chunks: [sha256('x')], sha256: sha256('x') });

  for (const [name, entries] of [
    ['a `../` path', [file('ok.txt'), file('../escaped.txt')]],
    ['an absolute path', [file('/tmp/escaped.txt')]],
    ['a symlink that escapes, then a file through it', [{ path: 'link', type: 'symlink', mode: 0o777, sizeBytes: 0, target: '../../outside' }, file('link/escaped.txt')]],
  ] as Array<[string, Manifest['entries']]>) {
    it(`refuses a crafted manifest with ${name}, writing nothing at all`, async () => {
      await t.store.put(blobKey(sha256('x')), 'x');
      const sha = await putManifest(t.store, { version: 1, entries, files: entries.length, sizeBytes: 1 });
      const target = join(t.dir, 'a', 'b', 'target');
      let err: unknown;
      await restoreTree(t.store, sha, target).catch((e: unknown) => (err = e));
      expect(err).to.be.instanceOf(ArtifactError);
      expect((err as Error).message).to.match(/refusing to restore/);
      expect(existsSync(join(t.dir, 'a', 'b', 'escaped.txt'))).to.equal(false);
      expect(existsSync(join(t.dir, 'a', 'b', 'target', 'ok.txt'))).to.equal(false);
      expect(existsSync(join(t.dir, 'outside'))).to.equal(false);
    });
  }

  describe('a manifest from the store is parsed with its schema, not cast', () => {
    const x = sha256('x');
    const good = { path: 'ok.txt', type: 'file', mode: 0o644, sizeBytes: 1, chunks: [x], sha256: x };
    for (const [name, bad, field] of [
      ['a mode that is a string', { ...good, path: 'bad.txt', mode: '0755' }, 'entries.1.mode'],
      ['a size that is a string', { ...good, path: 'bad.txt', sizeBytes: '1' }, 'entries.1.sizeBytes'],
      ['chunks that are a string, not a list', { ...good, path: 'bad.txt', chunks: x }, 'entries.1.chunks'],
      ['an unknown entry type', { ...good, path: 'bad.txt', type: 'fifo' }, 'entries.1.type'],
      ['a negative size', { ...good, path: 'bad.txt', sizeBytes: -1 }, 'entries.1.sizeBytes'],
      ['a file hash that is not hex', { ...good, path: 'bad.txt', sha256: 'Z'.repeat(64) }, 'entries.1.sha256'],
    ] as Array<[string, Record<string, unknown>, string]>) {
      it(`refuses ${name} with one line naming the manifest and \`${field}\`, writing nothing`, async () => {
        await t.store.put(blobKey(x), 'x');
        const body = JSON.stringify({ version: 1, entries: [good, bad], files: 2, sizeBytes: 2 });
        const sha = sha256(body);
        await t.store.put(manifestKey(sha), body);
        const target = join(t.dir, 'target');
        const err = await restoreTree(t.store, sha, target).catch((e: unknown) => e);
        expect(err).to.be.instanceOf(ArtifactError);
        const message = (err as Error).message;
        expect(message.startsWith(`artifact manifest ${sha} is misshapen: ${field}: `), message).to.equal(true);
        expect(message).to.not.include('\n');
        expect(existsSync(target)).to.equal(false);
      });
    }

    it('a manifest as saved today (files, packs, chunks, dirs, links) and a saved link round-trip byte for byte', async () => {
      const src = join(t.dir, 'src');
      mkdirSync(join(src, 'sub'), { recursive: true });
      writeFileSync(join(src, 'small.txt'), 'small');
      writeFileSync(join(src, 'sub', 'big.bin'), randomBytes(PACK_FILE_MAX_BYTES + 1));
      chmodSync(join(src, 'small.txt'), 0o755);
      symlinkSync('/usr/bin/python3', join(src, 'python'));
      symlinkSync(src, join(t.dir, 'link'));
      for (const path of [src, join(t.dir, 'link')]) {
        const { manifestSha } = await saveTree(t.store, path);
        const body = (await t.store.get(manifestKey(manifestSha)))!.toString('utf8');
        expect(encodeManifest(await readManifest(t.store, manifestSha))).to.equal(body);
      }
    });

    it('a manifest written before packs and links (whole JSON.stringify, no pack, no link) still restores', async () => {
      await t.store.put(blobKey(x), 'x');
      const body = JSON.stringify({ version: 1, entries: [{ path: 'd', type: 'dir', mode: 0o755, sizeBytes: 0 }, { path: 'd/x.txt', type: 'file', mode: 0o600, sizeBytes: 1, chunks: [x], sha256: x }], files: 1, sizeBytes: 1 });
      await t.store.put(manifestKey(sha256(body)), body);
      await restoreTree(t.store, sha256(body), join(t.dir, 'out'));
      expect(readFileSync(join(t.dir, 'out', 'd', 'x.txt'), 'utf8')).to.equal('x');
      expect(statSync(join(t.dir, 'out', 'd', 'x.txt')).mode & 0o777).to.equal(0o600);
    });
  });

  it('refuses to write through a symlink already in the target that leads outside it', async () => {
    await t.store.put(blobKey(sha256('x')), 'x');
    const outside = join(t.dir, 'outside');
    mkdirSync(outside);
    const target = join(t.dir, 'target');
    mkdirSync(target);
    symlinkSync(outside, join(target, 'output'));
    const sha = await putManifest(t.store, { version: 1, entries: [file('output/sub/escaped.txt')], files: 1, sizeBytes: 1 });
    let err: unknown;
    await restoreTree(t.store, sha, target).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(ArtifactError);
    expect(existsSync(join(outside, 'sub'))).to.equal(false);
    expect(lstatSync(join(target, 'output')).isSymbolicLink()).to.equal(true);
  });
});
