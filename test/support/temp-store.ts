import { join } from 'node:path';
import { LocalStore } from '../../common/local/local-store.js';
import { removeAll, tempDir } from './cli.js';

/**
 * Registers mocha hooks that give each test a fresh temp dir and a LocalStore rooted in it
 * (in `dir` itself, or in `dir/<storeSubdir>` when given), and remove the dir after the test.
 * Read `dir` and `store` inside hooks and tests, not at suite level.
 */
export function withTempStore(prefix: string, storeSubdir?: string): { readonly dir: string; readonly store: LocalStore } {
  let dir = '';
  let store: LocalStore | undefined;
  beforeEach(() => {
    dir = tempDir(prefix);
    store = new LocalStore(storeSubdir === undefined ? dir : join(dir, storeSubdir));
  });
  afterEach(() => removeAll(dir));
  return {
    get dir() {
      return dir;
    },
    get store() {
      if (!store) throw new Error('withTempStore: the store exists only inside hooks and tests');
      return store;
    },
  };
}
