import { expect } from 'chai';
import { UsageError } from '../../common/errors.js';
import { ExternalAgents } from '../../common/local/local-compute.js';
import { listRuns } from '../../common/runs.js';
import { repoInfo } from '../../coordinator/code-capture.js';
import { runCommand } from '../../coordinator/commands/run.js';
import { makeRepo, removeAll, tempDir } from '../support/cli.js';
import { coordinatorContext, submit } from '../support/coordinator.js';

describe('run: a provider no agent of this version can run', () => {
  let repo: string;
  let home: string;
  afterEach(() => removeAll(repo, home));

  it('is refused at submit in one line naming the file and line, and no run is recorded; --dry-run still shows the spec', async () => {
    repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: hi\n    provider: bash\n    commands: [echo hi]\n  - name: ide\n    provider: docker\n    image: ubuntu\n' });
    home = tempDir('home');
    const ctx = await coordinatorContext({ configYaml: '', home, cwd: repo, compute: new ExternalAgents() });
    const err = await submit(ctx, 'ide').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(UsageError);
    expect((err as Error).message).to.match(
      /^(\S*\/)?\.dstack\/workflows\.yaml:5: workflow `ide` has `provider: docker`, which this version of dstack cannot run yet \(it runs bash, python, code, lab and notebook\): `dstack run ide --dry-run` shows its job spec$/,
    );
    expect(await listRuns(ctx.store, (await repoInfo(repo)).repoId)).to.deep.equal([]);
    const before = ctx.out.text().length;
    const code = await runCommand(ctx, { workflow: 'ide', args: [], detach: true, dryRun: true, tag: undefined, useCache: false, overrides: { env: [], artifacts: [], deps: [] }, overrideArgv: [] });
    expect(code).to.equal(0);
    expect((JSON.parse(ctx.out.text().slice(before).split('\n')[0] ?? '') as { provider: string }).provider).to.equal('docker');
  });
});
