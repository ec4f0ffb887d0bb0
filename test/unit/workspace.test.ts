import { expect } from 'chai';
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import * as tar from 'tar';
import { rebuildCode } from '../../agent/workspace.js';
import type { CodeRef } from '../../common/code-ref.js';
import { JobFailedError } from '../../common/errors.js';
import { withTempStore } from '../support/temp-store.js';

type Entry = { path: string; type: 'File' | 'SymbolicLink' | 'Directory'; linkpath?: string; body?: string };

/** A tar written block by block, so that it can hold what no honest tool would write. */
function craftTar(entries: Entry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? '');
    const header = Buffer.alloc(512);
    new tar.Header({ path: e.path, type: e.type, mode: e.type === 'Directory' ? 0o755 : 0o644, size: body.length, mtime: new Date(0), ...(e.linkpath ? { linkpath: e.linkpath } : {}) }).encode(header, 0);
    blocks.push(header, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

const code = (archiveKey: string): CodeRef => ({ commit: 'c', branch: null, remoteUrl: null, archiveKey, diffKey: null, diffSha256: null, untrackedKey: null, untrackedSha256: null });

describe('workspace: rebuilding the code tree', () => {
  const t = withTempStore('ws', 'store');

  it('rebuilds committed links as they are, even absolute ones or ones that climb out of the repo', async () => {
    await t.store.put('code/archives/c.tar', craftTar([
      { path: 'a.txt', type: 'File', body: 'alpha' },
      { path: 'abs', type: 'SymbolicLink', linkpath: '/etc/hostname' },
      { path: 'sub/', type: 'Directory' },
      { path: 'sub/up', type: 'SymbolicLink', linkpath: '../../../../shared' },
    ]));
    const out = join(t.dir, 'job', 'code');
    await rebuildCode(t.store, code('code/archives/c.tar'), out);
    expect(readFileSync(join(out, 'a.txt'), 'utf8')).to.equal('alpha');
    expect(readlinkSync(join(out, 'abs'))).to.equal('/etc/hostname');
    expect(readlinkSync(join(out, 'sub', 'up'))).to.equal('../../../../shared');
  });

  it('applies the diff from a file it names itself, never after the hash the spec carries', async () => {
    await t.store.put('code/diffs/d.patch', 'diff --git a/new.txt b/new.txt\nnew file mode 100644\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hello\n');
    const out = join(t.dir, 'job', 'code');
    await rebuildCode(t.store, { ...code(''), archiveKey: null, diffKey: 'code/diffs/d.patch', diffSha256: '../escaped' }, out);
    expect(readFileSync(join(out, 'new.txt'), 'utf8')).to.equal('hello\n');
    expect(existsSync(join(t.dir, 'escaped.patch'))).to.equal(false);
  });

  for (const [name, entries] of [
    ['a link named with ..', [{ path: '../../evil', type: 'SymbolicLink', linkpath: '/tmp' }]],
    ['a link made through a link that leads out', [{ path: 'a', type: 'SymbolicLink', linkpath: '../../outside' }, { path: 'a/b', type: 'SymbolicLink', linkpath: 'x' }]],
    ['a link made two levels below a link that leads out', [{ path: 'a', type: 'SymbolicLink', linkpath: '../../outside' }, { path: 'a/b/c', type: 'SymbolicLink', linkpath: 'x' }]],
    ['a file below a link', [{ path: 'a', type: 'SymbolicLink', linkpath: '../../outside' }, { path: 'a/b.txt', type: 'File', body: 'x' }]],
  ] as Array<[string, Entry[]]>) {
    it(`refuses a crafted code tar with ${name}, writing nothing outside`, async () => {
      mkdirSync(join(t.dir, 'outside'));
      await t.store.put('code/archives/c.tar', craftTar(entries));
      const out = join(t.dir, 'job', 'code');
      const err = await rebuildCode(t.store, code('code/archives/c.tar'), out).catch((e: unknown) => e);
      expect(err, String(err)).to.be.instanceOf(JobFailedError);
      expect((err as Error).message).to.match(/^the run's code has a symlink `[^`]+` that cannot be rebuilt: /);
      expect(readdirSync(join(t.dir, 'outside'))).to.deep.equal([]);
      expect(existsSync(join(t.dir, 'evil'))).to.equal(false);
    });
  }
});
