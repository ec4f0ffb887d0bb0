import { expect } from 'chai';
import { SERVER_TOKEN } from '../../common/dev-tools.js';
import { ExternalAgents } from '../../common/local/local-compute.js';
import { listRuns, loadRun, runKeys, type AttemptRecord } from '../../common/runs.js';
import { psCommand } from '../../coordinator/commands/ps.js';
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

describe('dev environments: whose link ps shows', () => {
  let repo: string;
  let home: string;
  afterEach(() => removeAll(repo, home));

  it('ps shows the owner the link with its token, and another owner only that the dev environment is theirs', async () => {
    repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: nb\n    provider: notebook\n' });
    home = tempDir('home');
    const alice = await coordinatorContext({ configYaml: '', home, cwd: repo, compute: new ExternalAgents(), owner: 'alice@laptop' });
    const bob = await coordinatorContext({ configYaml: '', home, cwd: repo, compute: new ExternalAgents(), owner: 'bob@desk', provision: false });
    const { repoId } = await repoInfo(repo);
    const run = await submit(alice, 'nb');
    const token = (await alice.secrets?.get({ repoId, runName: run }, SERVER_TOKEN)) ?? '';
    // An agent's attempt that serves the notebook, ready.
    const now = new Date().toISOString();
    const attempt: AttemptRecord = {
      attempt: 1,
      agentId: 'a',
      host: 'h',
      startedAt: now,
      heartbeatAt: now,
      leaseMs: 600_000,
      state: 'running',
      service: { ports: [], server: { provider: 'notebook', port: 40001, path: '/tree', tokenParam: 'token', ready: true } },
    };
    await alice.store.put(runKeys.attempt(repoId, run, 1), JSON.stringify(attempt));
    const link = `http://127.0.0.1:40001/tree?token=${token}`;
    await psCommand(alice, { run: undefined, all: false, json: false });
    expect(alice.out.text()).to.include(link);
    await psCommand(bob, { run: undefined, all: false, json: true });
    await psCommand(bob, { run: undefined, all: false, json: false });
    expect(bob.out.text()).not.to.include(token);
    expect(bob.out.text()).to.include("(alice@laptop's)");
  });
});
