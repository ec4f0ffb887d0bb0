import { expect } from 'chai';
import { ExternalAgents } from '../../common/local/local-compute.js';
import type { Queue } from '../../common/ports.js';
import { psCommand } from '../../coordinator/commands/ps.js';
import { runCommand, type RunOptions } from '../../coordinator/commands/run.js';
import { makeRepo, removeAll, tempDir, waitFor } from '../support/cli.js';
import { coordinatorContext } from '../support/coordinator.js';

describe('submit: a CLI killed between recording the run and enqueuing it', () => {
  let repo: string;
  let home: string;
  afterEach(() => removeAll(repo, home));

  it('leaves a run that ps settles as failed, with a reason, once the grace has passed; a queued run stays Submitted', async () => {
    repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: hi\n    provider: bash\n    commands: [echo hi]\n' });
    home = tempDir('home');
    // A 1 s lease: the orphan grace (two leases) is 2 s.
    const ctx = await coordinatorContext({ configYaml: 'local:\n  visibilityTimeoutSec: 1\n', home, cwd: repo, compute: new ExternalAgents() });
    const o: RunOptions = { workflow: 'hi', args: [], detach: true, dryRun: false, tag: undefined, useCache: false, overrides: { env: [], artifacts: [], deps: [] }, overrideArgv: [] };
    expect(await runCommand(ctx, o)).to.equal(0);
    const queued = /Run ([a-z]+-[a-z]+-\d+)/.exec(ctx.out.text())?.[1] ?? '';
    // The process "dies" at the send: everything before it is stored, nothing after it happens.
    const real = await ctx.queueFor('default');
    const dying: Queue = Object.assign(Object.create(real) as Queue, { send: () => Promise.reject(new Error('killed -9')) });
    const killed = { ...ctx, queueFor: () => Promise.resolve(dying) };
    let err: unknown;
    await runCommand(killed, o).catch((e: unknown) => (err = e));
    expect((err as Error).message).to.equal('killed -9');

    const ps = async (): Promise<Map<string, string>> => {
      const before = ctx.out.text().length;
      await psCommand(ctx, { run: undefined, all: true, json: false });
      // The table's rows; ps also notes that the queued job has no agent (nothing starts them here).
      const lines = ctx.out.text().slice(before).split('\n').slice(1).filter((l) => /^[a-z]+-[a-z]+-\d+ /.test(l));
      return new Map(lines.map((l) => [l.split('  ')[0] ?? '', l]));
    };
    const first = await ps();
    expect(first.size).to.equal(2);
    const orphan = [...first.keys()].find((k) => k !== queued) ?? '';
    expect(first.get(orphan)).to.contain('Submitted');
    const settled = await waitFor(async () => {
      const rows = await ps();
      return rows.get(orphan)?.includes('Failed') ? rows : undefined;
    }, 10_000, 'ps to settle the orphan');
    expect(settled.get(orphan)).to.contain('never queued').and.contain(`dstack restart ${orphan}`);
    expect(settled.get(queued)).to.contain('Submitted');
  });
});
