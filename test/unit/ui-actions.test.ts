import { expect } from 'chai';
import { ExternalAgents } from '../../common/local/local-compute.js';
import { listRuns, loadRun } from '../../common/runs.js';
import { repoInfo } from '../../coordinator/code-capture.js';
import { restartAction } from '../../coordinator/ui/api-actions.js';
import { makeRepo, removeAll, tempDir } from '../support/cli.js';
import { coordinatorContext, submit } from '../support/coordinator.js';

describe('ui actions: restart', () => {
  let repo: string;
  let home: string;
  afterEach(() => removeAll(repo, home));

  it("answers with the new run's name, which the page then opens", async () => {
    repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: hello\n    provider: bash\n    commands:\n      - echo hi\n' });
    home = tempDir('home');
    const ctx = await coordinatorContext({ configYaml: '', home, cwd: repo, compute: new ExternalAgents() });
    const { repoId } = await repoInfo(repo);
    const first = await submit(ctx, 'hello');
    const answer = await restartAction(ctx, first);
    const others = (await listRuns(ctx.store, repoId)).map((r) => r.summary.runName).filter((n) => n !== first);
    expect(others).to.have.length(1);
    expect(answer).to.deep.include({ ok: true, runName: others[0] });
    expect((await loadRun(ctx.store, repoId, others[0] ?? '')).record.restartOf).to.equal(first);
  });
});
