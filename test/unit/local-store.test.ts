import { expect } from 'chai';
import { readdirSync } from 'node:fs';
import { Readable } from 'node:stream';
import { withTempStore } from '../support/temp-store.js';

describe('LocalStore: a write that fails leaves no temp file', () => {
  const t = withTempStore('store');

  // `a/b` can't be a file once `a/b/c` is: the move into place fails, as a full disk or a lost mount would.
  it('put, both plain and create-if-absent', async () => {
    await t.store.put('a/b/c', 'x');
    for (const options of [{}, { ifAbsent: true }]) {
      let err: unknown;
      await t.store.put('a/b', 'y', options).catch((e: unknown) => (err = e));
      expect(err, JSON.stringify(options)).to.be.instanceOf(Error);
    }
    expect(readdirSync(t.store.tmp)).to.deep.equal([]);
  });

  it('putStream', async () => {
    await t.store.put('a/b/c', 'x');
    let err: unknown;
    await t.store.putStream('a/b', Readable.from([Buffer.from('y')])).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(Error);
    expect(readdirSync(t.store.tmp)).to.deep.equal([]);
  });
});
