import { expect } from 'chai';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ExternalAgents } from '../../common/local/local-compute.js';
import { ConflictError, UsageError } from '../../common/errors.js';
import { TagRecordSchema } from '../../common/records/runs.js';
import { loadRun, readJson, runKeys } from '../../common/runs.js';
import { repoInfo } from '../../coordinator/code-capture.js';
import { rmCommand } from '../../coordinator/commands/rm.js';
import { runCommand, type RunOptions } from '../../coordinator/commands/run.js';
import { tagsAddCommand } from '../../coordinator/commands/tags.js';
import { makeRepo, removeAll, tempDir } from '../support/cli.js';
import { coordinatorContext } from '../support/coordinator.js';

describe('tags: run -t and rm refuse to lose a tag', () => {
  let repo: string;
  let home: string;
  let ctx: Awaited<ReturnType<typeof coordinatorContext>>;
  beforeEach(async () => {
    repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: hi\n    provider: bash\n    commands: [echo hi]\n' });
    home = tempDir('home');
    ctx = await coordinatorContext({ configYaml: '', home, cwd: repo, compute: new ExternalAgents() });
  });
  afterEach(() => removeAll(repo, home));

  const run = (tag: string, force = false): Promise<number> => {
    const o: RunOptions = { workflow: 'hi', args: [], detach: true, dryRun: false, tag, useCache: false, overrides: { env: [], artifacts: [], deps: [] }, overrideArgv: [], force };
    return runCommand(ctx, o);
  };
  const tagged = async (tag: string): Promise<string | undefined> => {
    const { repoId } = await repoInfo(repo);
    return (await readJson(ctx.store, runKeys.tag(repoId, tag), TagRecordSchema))?.runName;
  };
  const runNames = (): string[] => [...ctx.out.text().matchAll(/Run ([a-z]+-[a-z]+-\d+)/g)].map((m) => m[1] ?? '');

  it('run -t refuses a tag that points to another run, unless --force', async () => {
    expect(await run('best')).to.equal(0);
    const [first] = runNames();
    let err: unknown;
    await run('best').catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(ConflictError);
    expect((err as Error).message).to.contain('tag `best` already points to run').and.contain(first!).and.contain('--force');
    expect(await tagged('best')).to.equal(first);
    expect(await run('best', true)).to.equal(0);
    const second = runNames()[1];
    expect(second).to.not.equal(first);
    expect(await tagged('best')).to.equal(second);
  });

  it('two concurrent run -t of one tag: exactly one claims it, the other is refused and its run never queued', async () => {
    const results = await Promise.allSettled([run('same'), run('same')]);
    const ok = results.filter((r) => r.status === 'fulfilled');
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(ok).to.have.length(1);
    expect(refused).to.have.length(1);
    expect(refused[0]!.reason).to.be.instanceOf(ConflictError);
    const [winner] = runNames();
    expect(await tagged('same')).to.equal(winner);
    const counts = await (await ctx.queueFor('default')).counts();
    expect(counts.visible).to.equal(1);
  });

  it('rm of a tagged run needs --force and names the tags', async () => {
    const folder = join(repo, 'data');
    mkdirSync(folder);
    writeFileSync(join(folder, 'f.txt'), 'x');
    await tagsAddCommand(ctx, { tag: 'v1', run: undefined, paths: [folder] });
    const runName = /-> run (\S+)\./.exec(ctx.out.text())?.[1] ?? '';
    await tagsAddCommand(ctx, { tag: 'v2', run: runName, paths: [] });
    let err: unknown;
    await rmCommand(ctx, { run: runName, all: false, yes: true, force: false }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(UsageError);
    expect((err as Error).message).to.contain(`run ${runName} is tagged v1, v2`).and.contain('--force');
    const { repoId } = await repoInfo(repo);
    expect((await loadRun(ctx.store, repoId, runName)).status).to.equal('done');
    err = undefined;
    await rmCommand(ctx, { run: undefined, all: true, yes: true, force: false }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(UsageError);
    expect(await rmCommand(ctx, { run: runName, all: false, yes: true, force: true })).to.equal(0);
    expect(ctx.out.text()).to.contain(`Deleted ${runName} and its tags v1, v2.`);
    expect(await tagged('v1')).to.equal(undefined);
  });

  it('a damaged tag record does not stop rm: one warning names it, and the run is deleted', async () => {
    const folder = join(repo, 'data');
    mkdirSync(folder);
    writeFileSync(join(folder, 'f.txt'), 'x');
    await tagsAddCommand(ctx, { tag: 'v1', run: undefined, paths: [folder] });
    const runName = /-> run (\S+)\./.exec(ctx.out.text())?.[1] ?? '';
    const { repoId } = await repoInfo(repo);
    await ctx.store.delete([runKeys.tag(repoId, 'v1')]);
    await ctx.store.put(runKeys.tag(repoId, 'broken'), '{"tag": "broken", "runN');
    expect(await rmCommand(ctx, { run: runName, all: false, yes: true, force: false })).to.equal(0);
    expect(ctx.out.text()).to.contain(`Deleted ${runName}.`);
    expect(ctx.out.text()).to.contain(runKeys.tag(repoId, 'broken'));
  });
});
