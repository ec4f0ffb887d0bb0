import { expect } from 'chai';
import { SpecError } from '../../common/errors.js';
import { ExternalAgents } from '../../common/local/local-compute.js';
import { listRuns } from '../../common/runs.js';
import { repoInfo } from '../../coordinator/code-capture.js';
import { makeRepo, removeAll, tempDir } from '../support/cli.js';
import { coordinatorContext, submit } from '../support/coordinator.js';

const WORKFLOWS = `workflows:
  - name: hi
    provider: docker
    image: ubuntu:22.04
    entrypoint: /bin/bash -lc
    commands: [echo hi]
  - name: noimage
    provider: docker
    commands: [echo hi]
  - name: pip
    provider: docker
    image: python:3.10
    requirements: requirements.txt
  - name: entry
    provider: bash
    entrypoint: /bin/sh
    commands: [echo hi]
`;

describe('run: provider docker at submit', () => {
  let repo: string;
  let home: string;
  afterEach(() => removeAll(repo, home));

  async function refusal(workflow: string): Promise<unknown> {
    repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
    home = tempDir('home');
    const ctx = await coordinatorContext({ configYaml: '', home, cwd: repo, compute: new ExternalAgents() });
    const err = await submit(ctx, workflow).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(await listRuns(ctx.store, (await repoInfo(repo)).repoId)).to.deep.equal([]);
    return err;
  }

  it('is submitted with its image and `entrypoint` in the job spec, as specVersion 5', async () => {
    repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
    home = tempDir('home');
    const ctx = await coordinatorContext({ configYaml: '', home, cwd: repo, compute: new ExternalAgents() });
    await submit(ctx, 'hi');
    const [run] = await listRuns(ctx.store, (await repoInfo(repo)).repoId);
    const spec = run?.view?.record.spec;
    expect(spec).to.include({ provider: 'docker', image: 'ubuntu:22.04', specVersion: 5 });
    expect(spec?.entrypoint).to.deep.equal(['/bin/bash', '-lc']);
  });

  it('without `image`, with `requirements`, or `entrypoint` on another provider: one line naming the file and line, and no run is recorded', async () => {
    const cases: Array<[string, RegExp]> = [
      ['noimage', /\.dstack\/workflows\.yaml:7:5: workflow `noimage`: the docker provider needs `image:` \(for example `image: ubuntu:22\.04`\)$/],
      ['pip', /\.dstack\/workflows\.yaml:10:5: workflow `pip`: `requirements` applies to the bash and python providers: in a docker workflow, add `pip install -r requirements\.txt` to `commands`$/],
      ['entry', /\.dstack\/workflows\.yaml:14:5: workflow `entry`: `entrypoint` applies to `provider: docker`$/],
    ];
    for (const [workflow, line] of cases) {
      const err = await refusal(workflow);
      expect(err, workflow).to.be.instanceOf(SpecError);
      expect((err as Error).message).to.match(line);
      expect((err as Error).message).to.not.include('\n');
      removeAll(repo, home);
    }
  });
});
