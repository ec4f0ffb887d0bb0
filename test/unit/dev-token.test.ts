import { expect } from 'chai';
import { SERVER_TOKEN } from '../../common/dev-tools.js';
import { ExternalAgents } from '../../common/local/local-compute.js';
import { listRuns, loadRun } from '../../common/runs.js';
import { repoInfo } from '../../coordinator/code-capture.js';
import { restartCommand } from '../../coordinator/commands/restart.js';
import { makeRepo, removeAll, tempDir } from '../support/cli.js';
import { coordinatorContext, submit } from '../support/coordinator.js';

describe('dev environments: the token', () => {
  let repo: string;
  let home: string;
  afterEach(() => removeAll(repo, home));

  it('is a fresh random value per run, kept only in the secret store (never in the spec or the queue); restart gets a new one', async () => {
    repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: nb\n    provider: notebook\n' });
    home = tempDir('home');
    const ctx = await coordinatorContext({ configYaml: '', home, cwd: repo, compute: new ExternalAgents() });
    const { repoId } = await repoInfo(repo);
    const first = await submit(ctx, 'nb');
    const second = await submit(ctx, 'nb');
    const token = async (run: string): Promise<string | undefined> => ctx.secrets?.get({ repoId, runName: run }, SERVER_TOKEN);
    const [t1, t2] = [await token(first), await token(second)];
    expect(t1).to.match(/^[A-Za-z0-9_-]{32}$/);
    expect(t2).to.match(/^[A-Za-z0-9_-]{32}$/);
    expect(t1).not.to.equal(t2);
    const view = await loadRun(ctx.store, repoId, first);
    expect(view.record.spec.runSecrets).to.deep.equal([SERVER_TOKEN]);
    expect(JSON.stringify(view.record)).not.to.include(t1);
    const queue = await ctx.queueFor(view.record.placement?.profileId ?? 'default');
    for (let i = 0; i < 2; i++) {
      const m = await queue.receive({ visibilityMs: 60_000, waitMs: 0 });
      expect(m?.body).to.include('"provider":"notebook"');
      expect(m?.body).not.to.include(t1).and.not.to.include(t2);
    }
    // restart: same spec, a new token.
    await restartCommand(ctx, { run: first, detach: true, waitForLink: false });
    const runs = await listRuns(ctx.store, repoId);
    const restarted = runs.map((r) => r.summary.runName).find((n) => n !== first && n !== second) ?? '';
    const t3 = await token(restarted);
    expect(t3).to.match(/^[A-Za-z0-9_-]{32}$/);
    expect(t3).not.to.equal(t1);
  });
});
