import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { ROOT } from '../support/cli.js';

// Mocha merges a config file's `spec` with the globs given on the command line, so which files
// an npm script runs is decided by mocha's own option loader, read here as `npm run` would.
const require = createRequire(import.meta.url);
const { loadOptions } = require('mocha/lib/cli/options.cjs') as { loadOptions: (argv: string[]) => { _: string[]; spec?: string[] } };
const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;

/** The spec globs mocha resolves for one npm script, run from the package root. */
function specsOf(script: string): string[] {
  const line = scripts[script] ?? '';
  const words = [...line.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3] ?? '');
  expect(words[0], `${script}: ${line}`).to.equal('mocha');
  const cwd = process.cwd();
  process.chdir(ROOT);
  try {
    const o = loadOptions(words.slice(1));
    return [...new Set([...o._, ...(o.spec ?? [])])].sort();
  } finally {
    process.chdir(cwd);
  }
}

describe('npm test scripts: which test files each one runs', () => {
  it('test:unit runs only test/unit', () => {
    expect(specsOf('test:unit')).to.deep.equal(['test/unit/**/*.test.ts']);
  });

  it('test runs unit, contract and e2e, not the slow suite', () => {
    expect(specsOf('test')).to.deep.equal(['test/contract/**/*.test.ts', 'test/e2e/**/*.test.ts', 'test/unit/**/*.test.ts']);
  });

  it('test:slow runs only test/slow', () => {
    expect(specsOf('test:slow')).to.deep.equal(['test/slow/**/*.test.ts']);
  });
});
