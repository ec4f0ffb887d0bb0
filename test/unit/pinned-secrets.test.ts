import { expect } from 'chai';
import { UsageError } from '../../common/errors.js';
import { ExternalAgents } from '../../common/local/local-compute.js';
import { listRuns, settleRun } from '../../common/runs.js';
import type { SecretScope, SecretStore } from '../../common/secrets.js';
import { repoInfo } from '../../coordinator/code-capture.js';
import { rmCommand } from '../../coordinator/commands/rm.js';
import { makeRepo, removeAll, tempDir } from '../support/cli.js';
import { coordinatorContext, submit } from '../support/coordinator.js';

/**
 * A store whose list lags its writes, as Secrets Manager's ListSecrets may for minutes: names
 * put in the last "minutes" are not listed yet, though get and delete see them.
 */
function lagging(inner: SecretStore): SecretStore & { listed: number } {
  const s = {
    listed: 0,
    get: (scope: SecretScope, name: string) => inner.get(scope, name),
    put: (scope: SecretScope, name: string, value: string, o?: { ifAbsent?: boolean }) => inner.put(scope, name, value, o),
    list: async (_scope: SecretScope) => {
      s.listed++;
      return [];
    },
    delete: (scope: SecretScope, name: string) => inner.delete(scope, name),
  };
  return s;
}

describe('values of bare env names, pinned to their run', () => {
  let repo: string;
  let home: string;
  afterEach(() => removeAll(repo, home));

  it("deletes every bare env name of the run's spec, even those a lagging list does not show yet", async () => {
    repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: hi\n    provider: bash\n    env: [PINNED_A, PINNED_B]\n    commands: [echo hi]\n' });
    home = tempDir('home');
    const ctx = await coordinatorContext({ configYaml: '', home, cwd: repo, compute: new ExternalAgents() });
    const store = ctx.secrets!;
    const lag = lagging(store);
    ctx.secrets = lag;
    ctx.shellEnv = { PINNED_A: 'value-of-a-1234', PINNED_B: 'value-of-b-5678' };
    const run = await submit(ctx, 'hi');
    const { repoId } = await repoInfo(repo);
    const scope = { repoId, runName: run };
    expect(await store.get(scope, 'PINNED_A')).to.equal('value-of-a-1234');
    await settleRun(ctx.store, repoId, run, { status: 'done', exitCode: 0, reason: null, finishedAt: new Date().toISOString(), attempt: 1 });
    expect(await rmCommand(ctx, { run, all: false, yes: true })).to.equal(0);
    expect(await store.get(scope, 'PINNED_A')).to.equal(undefined);
    expect(await store.get(scope, 'PINNED_B')).to.equal(undefined);
    expect(lag.listed, 'rm asked the store too').to.be.above(0);
  });

  it('a run with a bare env name is refused where there is no secret store: the value never goes into the spec', async () => {
    repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: hi\n    provider: bash\n    env: [PINNED_A]\n    commands: [echo hi]\n' });
    home = tempDir('home');
    const ctx = await coordinatorContext({ configYaml: '', home, cwd: repo, compute: new ExternalAgents() });
    delete ctx.secrets;
    ctx.shellEnv = { PINNED_A: 'value-of-a-1234' };
    const err = await submit(ctx, 'hi').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(UsageError);
    expect((err as Error).message).to.equal(
      'env PINNED_A of workflow `hi`: a bare env name is kept as a secret of the run, and this backend has no secret store; give a value (`NAME=value`) instead',
    );
    expect(await listRuns(ctx.store, (await repoInfo(repo)).repoId)).to.deep.equal([]);
  });
});
