import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { LogShipper } from '../../agent/log-shipper.js';
import { Masker } from '../../agent/secrets.js';
import { LocalSecretStore } from '../../common/local/local-secrets.js';
import { runKeys } from '../../common/runs.js';
import { followRun } from '../../coordinator/follow.js';
import { removeAll, tempDir } from '../support/cli.js';
import { withTempStore } from '../support/temp-store.js';

/** What the masker ships for these writes, then the end of the stream. */
function masked(values: string[], writes: Array<Buffer | string>): Buffer {
  const m = new Masker(values);
  const parts = writes.map((w) => m.write(typeof w === 'string' ? Buffer.from(w) : w));
  return Buffer.concat([...parts, m.end()]);
}

describe('secret masking', () => {
  it('replaces a value on a line with other text, and nothing else', () => {
    expect(masked(['hunter22'], ['token=hunter22 ok\n']).toString()).to.equal('token=*** ok\n');
  });

  it('finds a value split across two reads, at every split point', () => {
    const text = 'before s3cr3t-value after\n';
    for (let i = 1; i < text.length; i++) {
      expect(masked(['s3cr3t-value'], [text.slice(0, i), text.slice(i)]).toString(), `split at ${i}`).to.equal('before *** after\n');
    }
  });

  it('finds a value split across many one-byte reads', () => {
    expect(masked(['abcdef'], [...'xxabcdefyy'].map((c) => c)).toString()).to.equal('xx***yy');
  });

  it('masks several values, and overlapping ones as one', () => {
    expect(masked(['alpha1', 'beta22'], ['alpha1 and beta22\n']).toString()).to.equal('*** and ***\n');
    // "abcd" and "cdef" overlap in "abcdef": neither part is left showing.
    expect(masked(['abcd', 'cdef'], ['xabcdefx']).toString()).to.equal('x***x');
    expect(masked(['abcd', 'cdef'], ['xab', 'cd', 'efx']).toString()).to.equal('x***x');
    expect(masked(['aaaa'], ['baaaaab']).toString()).to.equal('b***b');
  });

  it('keeps binary bytes around a value exactly', () => {
    const before = randomBytes(1000);
    const after = randomBytes(1000);
    const secret = 'Zq9-secret-Zq9';
    const input = Buffer.concat([before, Buffer.from(secret), after]);
    const out = masked([secret], [input.subarray(0, 1005), input.subarray(1005)]);
    // Random bytes could hold the value only by a chance of 2^-112.
    expect(out.equals(Buffer.concat([before, Buffer.from('***'), after]))).to.equal(true);
  });

  it('holds back only what could begin a value, and releases it at the end', () => {
    const m = new Masker(['secret-1']);
    expect(m.write(Buffer.from('plain\n')).toString()).to.equal('plain\n');
    expect(m.write(Buffer.from('x secr')).toString()).to.equal('x ');
    expect(m.end().toString()).to.equal('secr');
  });

  it('masks a value added later (a credential dstack made for the run) from the next write on, a split one included', () => {
    const m = new Masker(['first-secret']);
    expect(m.write(Buffer.from('tok=dev-tok')).toString()).to.equal('tok=dev-tok');
    m.add('dev-token-42');
    m.add('dev-token-42');
    m.add('ab');
    const rest = [m.write(Buffer.from('en-42 and first-secret, dev-tok')), m.write(Buffer.from('en-42 ab\n')), m.end()];
    expect(Buffer.concat(rest).toString()).to.equal('en-42 and ***, *** ab\n');
  });

  it('leaves values under 4 bytes unmasked, and an empty one changes nothing', () => {
    expect(masked(['abc', ''], ['abc abc\n']).toString()).to.equal('abc abc\n');
  });

  describe('in the log shipper', () => {
    const t = withTempStore('mask');
    it('stores the job output masked, a value split across reads included', async () => {
      const shipper = new LogShipper(t.store, (seq) => runKeys.logChunk('r', 'mask-run-1', 1, seq), 10);
      shipper.mask(['pa55word!']);
      shipper.write('out', 'login pa5');
      shipper.write('out', '5word! done\n');
      shipper.write('err', Buffer.from('pa55word!'));
      await shipper.close();
      const got: Record<string, string> = { out: '', err: '' };
      await followRun(t.store, 'r', 'mask-run-1', { follow: false, pollMs: 10, onRecord: (r) => (got[r.s] += Buffer.from(r.d).toString()) });
      expect(got).to.deep.equal({ out: 'login *** done\n', err: '***' });
    });

    it('masks a credential added after the job started, in both streams', async () => {
      const shipper = new LogShipper(t.store, (seq) => runKeys.logChunk('r', 'mask-run-2', 1, seq), 10);
      shipper.mask(['pa55word!']);
      shipper.write('out', 'a pa5');
      shipper.addMask('jupyter-token-1');
      shipper.write('out', '5word! url?token=jupyter-token-1\n');
      shipper.write('err', 'jupyter-token-1');
      await shipper.close();
      const got: Record<string, string> = { out: '', err: '' };
      await followRun(t.store, 'r', 'mask-run-2', { follow: false, pollMs: 10, onRecord: (r) => (got[r.s] += Buffer.from(r.d).toString()) });
      expect(got).to.deep.equal({ out: 'a *** url?token=***\n', err: '***' });
    });
  });
});

describe('local secret store', () => {
  let root: string;
  beforeEach(() => (root = tempDir('secrets')));
  afterEach(() => removeAll(root));

  it('keeps values per repo and per run, lists names only, files 0600 and folders 0700', async () => {
    const store = new LocalSecretStore(join(root, 'secrets'));
    await store.put({ repoId: 'a/b' }, 'TOKEN', 'v1');
    await store.put({ repoId: 'a/b', runName: 'lazy-owl-1' }, 'PINNED', 'v2');
    await store.put({ repoId: 'c/d' }, 'OTHER', 'v3');
    expect(await store.list({ repoId: 'a/b' })).to.deep.equal(['TOKEN']);
    expect(await store.get({ repoId: 'a/b', runName: 'lazy-owl-1' }, 'PINNED')).to.equal('v2');
    expect(await store.get({ repoId: 'c/d' }, 'TOKEN')).to.equal(undefined);
    const walk = (dir: string): void => {
      expect(statSync(dir).mode & 0o777, dir).to.equal(0o700);
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        if (e.isDirectory()) walk(join(dir, e.name));
        else expect(statSync(join(dir, e.name)).mode & 0o777, e.name).to.equal(0o600);
      }
    };
    walk(join(root, 'secrets'));
    expect(await store.delete({ repoId: 'a/b' }, 'TOKEN')).to.equal(true);
    expect(await store.delete({ repoId: 'a/b' }, 'TOKEN')).to.equal(false);
  });

  it('refuses names that are not env var names, and run names that are paths', async () => {
    const store = new LocalSecretStore(join(root, 'secrets'));
    for (const bad of ['1X', 'A-B', '../x', '']) {
      await store.put({ repoId: 'r' }, bad, 'v').then(
        () => expect.fail(`accepted ${bad}`),
        (e: Error) => expect(e.message).to.match(/environment variable name/),
      );
    }
    await store.get({ repoId: 'r', runName: '../../x' }, 'A').then(
      () => expect.fail('accepted a path as run name'),
      (e: Error) => expect(e.message).to.match(/not a run name/),
    );
  });
});
