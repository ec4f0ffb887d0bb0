import { expect } from 'chai';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { UsageError } from '../../common/errors.js';
import { ExternalAgents } from '../../common/local/local-compute.js';
import { listRuns } from '../../common/runs.js';
import { agentsAreLocal, imageProblem, listGpus, refuseWhatThisMachineCannotRun, resourceProblem } from '../../coordinator/capability.js';
import { repoInfo } from '../../coordinator/code-capture.js';
import { restartCommand } from '../../coordinator/commands/restart.js';
import { runCommand } from '../../coordinator/commands/run.js';
import type { Overrides } from '../../coordinator/overrides.js';
import { parseConfig } from '../../common/config.js';
import type { JobSpec } from '../../common/spec/job-spec.js';
import { makeRepo, removeAll, tempDir } from '../support/cli.js';
import { coordinatorContext } from '../support/coordinator.js';

// The shared corpus's dev-environments file (dstackai-dstack-examples__f8c6f11__6.yaml), as a user has it.
const DEV_ENVIRONMENTS = `workflows:
  - name: ide-code
    help: "This workflows launches a VS Code dev environment."
    provider: code

  - name: ide-code-gpu
    help: "This workflows launches a VS Code and requires 64GB of memory and one default GPU."
    provider: code
    resources:
      memory: 64GB
      gpu: 1

  - name: ide-lab
    help: "This workflows launches a JupyterLab dev environment."
    provider: lab

  - name: ide-notebook
    help: "This workflows launches a Jupyter notebook dev environment."
    provider: notebook
`;

const OTHERS = `workflows:
  - name: four-gpus
    provider: bash
    commands: [nvidia-smi]
    resources:
      gpu: 4
  - name: two-a10g
    provider: bash
    commands: [nvidia-smi]
    resources:
      gpu: { count: 2, name: A10G }
  - name: v100
    provider: bash
    commands: [nvidia-smi]
    resources:
      gpu: { name: V100, memory: 32GB }
  - name: old-python
    provider: python
    python: 3.1
    file: main.py
  - name: many-cpus
    provider: bash
    commands: [nproc]
    resources:
      cpu: 1000
`;

/** An executable script in `dir`. */
function script(dir: string, name: string, body: string): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, name);
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

const noOverrides = (): Overrides => ({ env: [], artifacts: [], deps: [] });

describe('run: refused at submit when the local agents of this machine cannot run it', () => {
  let repo: string;
  let home: string;
  let dir: string;
  beforeEach(() => {
    repo = makeRepo({ '.dstack/workflows/dev-environments.yaml': DEV_ENVIRONMENTS, '.dstack/workflows/others.yaml': OTHERS, 'main.py': 'print(1)\n' });
    home = tempDir('home');
    dir = tempDir('capability');
  });
  afterEach(() => removeAll(repo, home, dir));

  /** A local-backend coordinator whose shell PATH is `path`; no agent ever takes its jobs. */
  async function context(path: string, configYaml = '') {
    const ctx = await coordinatorContext({ configYaml, home, cwd: repo, compute: new ExternalAgents() });
    ctx.shellEnv = { PATH: path };
    return ctx;
  }

  async function run(ctx: Awaited<ReturnType<typeof context>>, workflow: string, overrides: Overrides = noOverrides(), dryRun = false): Promise<{ code?: number; error?: unknown }> {
    return runCommand(ctx, { workflow, args: [], detach: true, dryRun, tag: undefined, useCache: false, overrides, overrideArgv: [], waitForLink: false }).then(
      (code) => ({ code }),
      (error: unknown) => ({ error }),
    );
  }

  async function runs(ctx: Awaited<ReturnType<typeof context>>): Promise<number> {
    return (await listRuns(ctx.store, (await repoInfo(repo)).repoId)).length;
  }

  /** The one line of a UsageError (exit 2). */
  function refusal(r: { code?: number; error?: unknown }): string {
    expect(r.error, `exited ${String(r.code)}`).to.be.instanceOf(UsageError);
    const message = (r.error as Error).message;
    expect(message.split('\n'), message).to.have.length(1);
    return message;
  }

  it('a notebook or lab whose server is not on PATH: one line with file:line, what is missing and how to install it; no run; --dry-run still shows the spec', async () => {
    const ctx = await context(join(dir, 'empty'));
    expect(refusal(await run(ctx, 'ide-notebook'))).to.match(
      /^(\S*\/)?\.dstack\/workflows\/dev-environments\.yaml:17: workflow `ide-notebook` \(`provider: notebook`\) needs the Jupyter Notebook, and `jupyter-notebook` is not on PATH: install it with `apt-get install jupyter-notebook` or `pip install notebook`/,
    );
    expect(refusal(await run(ctx, 'ide-lab'))).to.match(/dev-environments\.yaml:13: workflow `ide-lab` \(`provider: lab`\) needs JupyterLab, and `jupyter-lab` is not on PATH: install it with `pip install jupyterlab`/);
    expect(await runs(ctx)).to.equal(0);
    expect(await run(ctx, 'ide-notebook', noOverrides(), true)).to.deep.equal({ code: 0 });
  });

  it('code: code-server on PATH or in local.codeServer passes; a local.codeServer that is not there is named', async () => {
    const bin = join(dir, 'bin');
    script(bin, 'code-server', 'exit 0');
    const ok = await context(bin);
    expect(await run(ok, 'ide-code')).to.deep.equal({ code: 0 });
    expect(await runs(ok)).to.equal(1);
    const missing = join(dir, 'nowhere', 'code-server');
    const bad = await context(bin, `local:\n  codeServer: ${missing}\n`);
    expect(refusal(await run(bad, 'ide-code'))).to.match(
      new RegExp(`dev-environments\\.yaml:2: workflow \`ide-code\` \\(\`provider: code\`\\) needs code-server \\(VS Code in the browser\\), and \`local\\.codeServer\` \\(${missing.replace(/[.]/g, '\\.')}\\) is not an executable: install it with`),
    );
    const configured = await context(join(dir, 'empty'), `local:\n  codeServer: ${join(bin, 'code-server')}\n`);
    expect(await run(configured, 'ide-code')).to.deep.equal({ code: 0 });
  });

  it("the corpus's ide-code-gpu (64GB, one GPU) on a machine without a GPU: refused with what the machine has and the overrides; with --gpu 0 --memory 8GB it is submitted", async () => {
    const bin = join(dir, 'bin');
    script(bin, 'code-server', 'exit 0');
    const ctx = await context(bin);
    const memMiB = Math.floor(totalmem() / 2 ** 20);
    const has = `no GPU, ${(memMiB / 1024).toFixed(1)}GB of memory and ${cpus().length} CPU${cpus().length === 1 ? '' : 's'}`;
    // On a machine with 64GB or more, only the GPU is missing.
    const big = memMiB >= 64 * 1024;
    const line = refusal(await run(ctx, 'ide-code-gpu'));
    expect(line).to.match(/^(\S*\/)?\.dstack\/workflows\/dev-environments\.yaml:6: /);
    expect(line.replace(/^\S+: /, '')).to.equal(
      big
        ? `workflow \`ide-code-gpu\` asks for 1 GPU, and this machine has ${has}: run it here anyway with \`dstack run ide-code-gpu --gpu 0\``
        : `workflow \`ide-code-gpu\` asks for 1 GPU and 64GB of memory, and this machine has ${has}: run it here anyway with \`dstack run ide-code-gpu --gpu 0 --memory ${memMiB >= 16 * 1024 && memMiB < 32 * 1024 ? '8GB' : line.replace(/.*--memory (\S+)`$/, '$1')}\``,
    );
    expect(await runs(ctx)).to.equal(0);
    expect(await run(ctx, 'ide-code-gpu', { ...noOverrides(), gpu: 0, memory: '8GB' })).to.deep.equal({ code: 0 });
    expect(await runs(ctx)).to.equal(1);
  });

  describe('with nvidia-smi listing two A10G', () => {
    let bin: string;
    beforeEach(() => {
      bin = join(dir, 'bin');
      script(bin, 'nvidia-smi', `[ "$*" = "--query-gpu=index,name,memory.total --format=csv,noheader,nounits" ] || exit 9\necho "0, NVIDIA A10G, 23028"\necho "1, NVIDIA A10G, 23028"`);
    });

    it('lists the GPUs', async () => {
      expect(await listGpus(bin)).to.deep.equal([
        { index: 0, name: 'NVIDIA A10G', memoryMiB: 23028 },
        { index: 1, name: 'NVIDIA A10G', memoryMiB: 23028 },
      ]);
      expect(await listGpus(join(dir, 'empty'))).to.deep.equal([]);
    });

    it('two A10G pass; four GPUs, or a V100, are refused naming the two A10G and the overrides that fit them', async () => {
      const ctx = await context(bin);
      expect(await run(ctx, 'two-a10g')).to.deep.equal({ code: 0 });
      expect(refusal(await run(ctx, 'four-gpus'))).to.match(/others\.yaml:2: workflow `four-gpus` asks for 4 GPUs, and this machine has 2×A10G \(22\.5GB\), [\d.]+GB of memory and \d+ CPUs?: run it here anyway with `dstack run four-gpus --gpu 2`$/);
      expect(refusal(await run(ctx, 'v100'))).to.match(
        /others\.yaml:12: workflow `v100` asks for 1 V100 GPU with 32GB, and this machine has 2×A10G \(22\.5GB\), .*: run it here anyway with `dstack run v100 --gpu 1 --gpu-name A10G --gpu-memory 16GB`$/,
      );
      expect(await runs(ctx)).to.equal(1);
      expect(await run(ctx, 'four-gpus', { ...noOverrides(), gpu: 2 })).to.deep.equal({ code: 0 });
    });
  });

  it('a python: version no interpreter here provides is refused with the fix', async () => {
    const ctx = await context(join(dir, 'empty'));
    expect(refusal(await run(ctx, 'old-python'))).to.match(
      /others\.yaml:17: workflow `old-python` asks for `python: 3\.1`, which no interpreter on this machine provides \(.*\): install Python 3\.1 or conda, or change `python:`$/,
    );
    expect(await runs(ctx)).to.equal(0);
  });

  it('more CPUs than the machine has is refused with --cpu N', async () => {
    const ctx = await context(join(dir, 'empty'));
    expect(refusal(await run(ctx, 'many-cpus'))).to.match(new RegExp(`workflow \`many-cpus\` asks for 1000 CPUs, .* run it here anyway with \`dstack run many-cpus --cpu ${cpus().length}\`$`));
  });

  it('restart: a run whose server is gone since is refused the same way, naming the run', async () => {
    const bin = join(dir, 'bin');
    script(bin, 'jupyter-notebook', 'exit 0');
    const ctx = await context(bin);
    expect(await run(ctx, 'ide-notebook')).to.deep.equal({ code: 0 });
    const [first] = await listRuns(ctx.store, (await repoInfo(repo)).repoId);
    ctx.shellEnv = { PATH: join(dir, 'empty') };
    const r = await restartCommand(ctx, { run: first?.summary.runName ?? '', detach: true }).then(
      (code) => ({ code }),
      (error: unknown) => ({ error }),
    );
    expect(refusal(r)).to.match(new RegExp(`^run ${first?.summary.runName ?? ''}: workflow \`ide-notebook\` \\(\`provider: notebook\`\\) needs the Jupyter Notebook, and \`jupyter-notebook\` is not on PATH`));
    expect(await runs(ctx)).to.equal(1);
  });
});

describe('capability: which agents the check speaks for, and the resource line', () => {
  it('checks for the local backend and for aws with agents: local, not for EC2 or external agents', () => {
    const config = (yaml: string) => ({ config: parseConfig(yaml, 'test', '/tmp/h') });
    expect(agentsAreLocal(config(''))).to.equal(true);
    expect(agentsAreLocal(config('backend: aws\naws:\n  bucket: b-b-b\n  agents: local\n'))).to.equal(true);
    expect(agentsAreLocal(config('backend: aws\naws:\n  bucket: b-b-b\n'))).to.equal(false);
    expect(agentsAreLocal(config('backend: aws\naws:\n  bucket: b-b-b\n  agents: none\n'))).to.equal(false);
  });

  it('ide-code-gpu on a 2-CPU, 23.4GB machine without a GPU', () => {
    expect(resourceProblem('ide-code-gpu', { memoryMiB: 65536, gpu: { count: 1 }, interruptible: false, local: false }, { cpus: 2, memoryMiB: 23976, gpus: [] })).to.equal(
      'workflow `ide-code-gpu` asks for 1 GPU and 64GB of memory, and this machine has no GPU, 23.4GB of memory and 2 CPUs: run it here anyway with `dstack run ide-code-gpu --gpu 0 --memory 8GB`',
    );
    expect(resourceProblem('ide-code-gpu', { memoryMiB: 8192, interruptible: false, local: false }, { cpus: 2, memoryMiB: 23976, gpus: [] })).to.equal(undefined);
  });
});

describe('run: refused at submit when the EC2 agents\' image cannot serve it', () => {
  it('a python: version the image has no env for is one line naming the image\'s versions and the fix; an image of your own is not judged', async () => {
    expect(imageProblem({ workflow: 'w', python: '3.10' }, false)).to.equal(undefined);
    expect(imageProblem({ workflow: 'w', python: '3.11.4' }, false)).to.equal(undefined);
    expect(imageProblem({ workflow: 'w' }, false)).to.equal(undefined);
    expect(imageProblem({ workflow: 'w', python: '3.12' }, true)).to.equal(undefined);
    const ctx = { config: parseConfig('backend: aws\naws:\n  bucket: dstack-test\n  agents: ec2\n', 'test', '/tmp/h'), shellEnv: {} };
    const spec = { workflow: 'w', python: '3.12', provider: 'bash', resources: { interruptible: false, local: false } } as unknown as JobSpec;
    const err = await refuseWhatThisMachineCannotRun(ctx, '.dstack/workflows.yaml:3', spec).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(UsageError);
    expect((err as Error).message).to.equal(
      ".dstack/workflows.yaml:3: workflow `w` asks for `python: 3.12`, and the EC2 agents' image has Python 3.7, 3.8, 3.9, 3.10, 3.11: use one of these, or build an image with it (DSTACK_PYTHON_VERSIONS, see ami/README.md) and set `aws.ami`",
    );
  });
});
