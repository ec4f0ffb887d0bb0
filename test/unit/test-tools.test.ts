import { expect } from 'chai';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeAll, tempDir } from '../support/cli.js';
import { findTool, requireTool, type SkippableContext } from '../support/tools.js';

class Skipped extends Error {}

/** A mocha-like context whose skip() throws, as mocha's does, and a test whose title the helper may amend. */
function fakeContext(type = 'test'): SkippableContext & { test: { title: string; type: string } } {
  return {
    test: { title: 'opens the notebook', type },
    skip: () => {
      throw new Skipped();
    },
  };
}

function tool(dir: string, name: string): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, name);
  writeFileSync(file, '#!/bin/sh\n');
  chmodSync(file, 0o755);
  return file;
}

describe('test support: requireTool', () => {
  let dir: string;
  beforeEach(() => (dir = tempDir('tools')));
  afterEach(() => removeAll(dir));

  it('returns the path of a tool on PATH', () => {
    const bin = join(dir, 'bin');
    const path = tool(bin, 'jupyter-notebook');
    expect(requireTool(fakeContext(), 'jupyter-notebook', { env: { PATH: `/nonexistent:${bin}` } })).to.equal(path);
  });

  it('skips a test whose tool is absent, saying which tool and how to install it', () => {
    const lines: string[] = [];
    const ctx = fakeContext();
    expect(() => requireTool(ctx, 'jupyter-notebook', { env: { PATH: join(dir, 'empty') }, log: (l) => lines.push(l) })).to.throw(Skipped);
    expect(lines).to.deep.equal(['skipped: needs jupyter-notebook (apt-get install jupyter-notebook)']);
    expect(ctx.test.title).to.equal('opens the notebook (skipped: needs jupyter-notebook (apt-get install jupyter-notebook))');
  });

  it('in a hook, skips without touching the hook title', () => {
    const ctx = fakeContext('hook');
    expect(() => requireTool(ctx, 'jupyter-lab', { env: { PATH: '' }, log: () => undefined })).to.throw(Skipped);
    expect(ctx.test.title).to.equal('opens the notebook');
  });

  it('fails instead of skipping when CI is set', () => {
    const lines: string[] = [];
    expect(() => requireTool(fakeContext(), 'dockerd', { env: { PATH: join(dir, 'empty'), CI: '1' }, log: (l) => lines.push(l) })).to.throw(
      Error,
      /^needs dockerd \(apt-get install docker\.io\): CI must install it/,
    );
    expect(lines).to.deep.equal([]);
  });

  describe('code-server', () => {
    it('is DSTACK_TEST_CODE_SERVER when set, whatever is on PATH', () => {
      const given = tool(join(dir, 'given'), 'code-server');
      tool(join(dir, 'bin'), 'code-server');
      expect(findTool('code-server', { env: { PATH: join(dir, 'bin'), DSTACK_TEST_CODE_SERVER: given }, cacheRoot: dir })).to.equal(given);
      // A wrong DSTACK_TEST_CODE_SERVER is not silently replaced by another binary.
      expect(findTool('code-server', { env: { PATH: join(dir, 'bin'), DSTACK_TEST_CODE_SERVER: join(dir, 'nope') }, cacheRoot: dir })).to.equal(undefined);
    });

    it('is found on PATH, else in the CI cache, newest day first', () => {
      const cache = join(dir, 'cache');
      tool(join(cache, '2026-01-01', 'code-server-4.99.3', 'node_modules', '.bin'), 'code-server');
      const newest = tool(join(cache, '2026-01-02', 'code-server-4.99.4', 'node_modules', '.bin'), 'code-server');
      tool(join(cache, 'code-server-4.99.1', 'node_modules', '.bin'), 'code-server');
      expect(findTool('code-server', { env: { PATH: '' }, cacheRoot: cache })).to.equal(newest);
      const onPath = tool(join(dir, 'bin'), 'code-server');
      expect(findTool('code-server', { env: { PATH: join(dir, 'bin') }, cacheRoot: cache })).to.equal(onPath);
      expect(findTool('code-server', { env: { PATH: '' }, cacheRoot: join(dir, 'none') })).to.equal(undefined);
    });

    it('a cache folder without a working install does not count', () => {
      const cache = join(dir, 'cache');
      mkdirSync(join(cache, '2026-01-03', 'code-server-4.99.4'), { recursive: true });
      const older = tool(join(cache, '2026-01-02', 'code-server-4.99.4', 'node_modules', '.bin'), 'code-server');
      expect(findTool('code-server', { env: { PATH: '' }, cacheRoot: cache })).to.equal(older);
    });
  });
});
