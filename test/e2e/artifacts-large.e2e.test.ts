import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dstack, removeAll, tempDir, withRepoAndHome } from '../support/cli.js';

// 20 MiB: three chunks, the first two hashed on the hashing threads, which must work from the bundles in dist/.
const WORKFLOWS = `workflows:
  - name: produce-big
    provider: bash
    commands:
      - mkdir -p weights
      - head -c 20971520 /dev/urandom > weights/model.bin
      - sha256sum weights/model.bin | cut -c1-64
    artifacts:
      - path: ./weights
  - name: consume-big
    provider: bash
    deps:
      - workflow: produce-big
    commands:
      - sha256sum weights/model.bin | cut -c1-64
`;

describe('e2e: a multi-chunk artifact through the built CLI and agent', function () {
  this.timeout(120_000);
  const t = withRepoAndHome(WORKFLOWS);

  it('a 20 MiB file saved by the agent reaches a dep and a download byte for byte', async () => {
    const run = (args: string[]) => dstack(args, { cwd: t.repo, home: t.home });
    const p = await run(['run', 'produce-big']);
    expect(p.code, p.stderr).to.equal(0);
    const made = p.stdout.trim();
    expect(made).to.match(/^[0-9a-f]{64}$/);
    const c = await run(['run', 'consume-big']);
    expect(c.code, c.stderr).to.equal(0);
    expect(c.stdout.trim()).to.equal(made);
    const runName = /Run ([a-z]+-[a-z]+-\d+)/.exec(p.stderr)?.[1] ?? '';
    const out = tempDir('download-big');
    try {
      const d = await run(['artifacts', 'download', runName, '-o', out]);
      expect(d.code, d.stderr).to.equal(0);
      expect(createHash('sha256').update(readFileSync(join(out, 'weights', 'model.bin'))).digest('hex')).to.equal(made);
    } finally {
      removeAll(out);
    }
  });
});
