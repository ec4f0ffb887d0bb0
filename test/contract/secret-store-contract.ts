import { expect } from 'chai';
import { ConflictError } from '../../common/errors.js';
import type { SecretStore } from '../../common/secrets.js';

export interface SecretStoreFixture {
  store: SecretStore;
  cleanup(): Promise<void>;
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  return p.then(
    () => expect.fail('expected a rejection'),
    (e: unknown) => e as Error,
  );
}

/** The SecretStore contract: every implementation must pass it. */
export function secretStoreContract(name: string, make: () => Promise<SecretStoreFixture>): void {
  describe(`SecretStore contract: ${name}`, function () {
    this.timeout(20_000);
    let fx: SecretStoreFixture;
    beforeEach(async () => {
      fx = await make();
    });
    afterEach(async () => {
      await fx.cleanup();
    });
    const repo = { repoId: 'https://github.com/acme/models.git' };
    const run = { repoId: repo.repoId, runName: 'lazy-owl-1' };

    it('adds, reads, updates and deletes a value; a missing one is undefined', async () => {
      expect(await fx.store.get(repo, 'TOKEN')).to.equal(undefined);
      await fx.store.put(repo, 'TOKEN', 'v1-Zq9', { ifAbsent: true });
      expect(await fx.store.get(repo, 'TOKEN')).to.equal('v1-Zq9');
      await fx.store.put(repo, 'TOKEN', 'v2-Zq9');
      expect(await fx.store.get(repo, 'TOKEN')).to.equal('v2-Zq9');
      expect(await fx.store.delete(repo, 'TOKEN')).to.equal(true);
      expect(await fx.store.get(repo, 'TOKEN')).to.equal(undefined);
      expect(await fx.store.delete(repo, 'TOKEN')).to.equal(false);
    });

    it('keeps any text exactly: newlines, quotes, unicode', async () => {
      const value = 'line 1\nline "2"\t✓ ключ $HOME \\n';
      await fx.store.put(repo, 'MULTI', value);
      expect(await fx.store.get(repo, 'MULTI')).to.equal(value);
    });

    it('refuses an add over an existing name (ConflictError) and keeps the first value', async () => {
      await fx.store.put(repo, 'TOKEN', 'first-value', { ifAbsent: true });
      const e = await rejection(fx.store.put(repo, 'TOKEN', 'second-value', { ifAbsent: true }));
      expect(e).to.be.instanceOf(ConflictError);
      expect(e.message).to.equal('secret `TOKEN` exists: use `dstack secrets update TOKEN`');
      expect(await fx.store.get(repo, 'TOKEN')).to.equal('first-value');
    });

    it('lists the names of one scope, sorted: not the run values, not another repo, never the values', async () => {
      await fx.store.put(repo, 'B_TOKEN', 'value-b');
      await fx.store.put(repo, 'A_TOKEN', 'value-a');
      await fx.store.put(run, 'PINNED', 'value-p');
      await fx.store.put({ repoId: 'https://github.com/other/repo.git' }, 'OTHER', 'value-o');
      expect(await fx.store.list(repo)).to.deep.equal(['A_TOKEN', 'B_TOKEN']);
      expect(await fx.store.list(run)).to.deep.equal(['PINNED']);
      expect(await fx.store.get(repo, 'PINNED')).to.equal(undefined);
      expect(await fx.store.get(run, 'A_TOKEN')).to.equal(undefined);
      expect(await fx.store.list({ repoId: 'https://github.com/none/x.git' })).to.deep.equal([]);
    });

    it('lists many names', async () => {
      const names = Array.from({ length: 12 }, (_, i) => `K_${String(i).padStart(2, '0')}`);
      for (const n of names) await fx.store.put(repo, n, `value-${n}`);
      expect(await fx.store.list(repo)).to.deep.equal(names);
    });

    it('takes a deleted name again at once', async () => {
      await fx.store.put(repo, 'TOKEN', 'old-value', { ifAbsent: true });
      await fx.store.delete(repo, 'TOKEN');
      await fx.store.put(repo, 'TOKEN', 'new-value', { ifAbsent: true });
      expect(await fx.store.get(repo, 'TOKEN')).to.equal('new-value');
    });

    it('refuses names that are not env var names, and run names that are paths', async () => {
      for (const bad of ['1X', 'A-B', '../x', '']) {
        const e = await rejection(fx.store.put(repo, bad, 'v'));
        expect(e.message).to.match(/environment variable name/);
      }
      const e = await rejection(fx.store.get({ repoId: 'r', runName: '../../x' }, 'A'));
      expect(e.message).to.match(/not a run name/);
    });
  });
}
