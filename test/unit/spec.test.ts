import { expect } from 'chai';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CodeRef } from '../../common/code-ref.js';
import { SpecError, formatProblem, type SpecProblem } from '../../common/errors.js';
import { buildJobSpec, sizeMiB } from '../../common/spec/job-spec.js';
import { loadWorkflows, parseWorkflowsText, type LocatedWorkflow } from '../../common/spec/load.js';
import { hasSharedCorpus, sharedCorpus } from '../support/corpus.js';
import { removeAll, tempDir } from '../support/cli.js';

const CODE: CodeRef = { commit: 'abc', branch: 'main', remoteUrl: null, archiveKey: null, diffKey: null, diffSha256: null, untrackedKey: null, untrackedSha256: null };

function parse(text: string, file = 'workflows.yaml'): { workflows: LocatedWorkflow[]; problems: SpecProblem[] } {
  const problems: SpecProblem[] = [];
  const workflows = parseWorkflowsText(text, file, problems);
  return { workflows, problems };
}

function build(located: LocatedWorkflow, args: string[] = [], shellEnv: Record<string, string> = {}) {
  return buildJobSpec({ located, repoId: 'r', runName: 'lazy-owl-1', jobId: 'j1', args, shellEnv, code: CODE, now: new Date(0) });
}

// This file is labelled hosted-2022 in the corpus README, but every key in it (provider: python,
// file, help, artifacts as strings) is valid in the 0.0.x python provider that issue #2 asks for.
const HOSTED_BUT_VALID_OSS = new Set(['dstackai-dstack__0391aa1d7__1.yaml']);

describe('workflow spec: the shared corpus of real 2022 files', () => {
  const files = sharedCorpus();
  before(function () {
    if (!hasSharedCorpus()) this.skip();
  });

  it('has the 23 files its README lists', () => {
    expect(files).to.have.length(23);
  });

  for (const f of files.filter((c) => c.era !== 'hosted-2022' || HOSTED_BUT_VALID_OSS.has(c.file))) {
    it(`accepts ${f.era} ${f.file} and builds a job spec for every workflow`, () => {
      const { workflows, problems } = parse(f.text, f.file);
      expect(problems.map(formatProblem)).to.deep.equal([]);
      expect(workflows.length).to.be.greaterThan(0);
      for (const w of workflows) {
        const spec = build(w, ['--epochs', '2']);
        expect(spec.workflow).to.equal(w.workflow.name);
        expect(JSON.stringify(spec)).not.to.include('${{');
      }
    });
  }

  for (const f of files.filter((c) => c.era === 'hosted-2022' && !HOSTED_BUT_VALID_OSS.has(c.file))) {
    it(`rejects hosted-era ${f.file} with file:line:col and the replacement`, () => {
      const { workflows, problems } = parse(f.text, f.file);
      expect(problems.length).to.be.greaterThan(0);
      for (const p of problems) {
        const line = formatProblem(p);
        expect(line).to.match(new RegExp(`^${f.file.replace(/\./g, '\\.')}:\\d+:\\d+: `));
        expect(line).to.match(/use `|add `provider|move its keys/);
        expect(line).not.to.include('\n');
      }
      expect(workflows.filter((w) => f.text.includes('depends-on') && w.workflow.name === 'train-mnist')).to.deep.equal([]);
    });
  }

  it('names the replacement for each hosted key', () => {
    const messages = files
      .filter((c) => c.era === 'hosted-2022')
      .flatMap((c) => parse(c.text, c.file).problems.map((p) => p.message))
      .join('\n');
    expect(messages).to.include('`depends-on` is from the hosted 2022 format: use `deps:`');
    expect(messages).to.include('`python_script` is from the hosted 2022 format: use `provider: python` with `file:');
    expect(messages).to.include('`template` is from the hosted 2022 format');
    expect(messages).to.include('add `provider: docker`');
    expect(messages).to.include('`${{ gpu }}` is not a known variable');
  });
});

describe('workflow spec: the 2022 format as users wrote it', () => {
  it('keeps python: 3.10 as "3.10", not 3.1', () => {
    const { workflows } = parse('workflows:\n  - name: a\n    provider: bash\n    python: 3.10\n    commands: [python --version]\n');
    expect(workflows[0]?.workflow.python).to.equal('3.10');
    expect(build(workflows[0]!).python).to.equal('3.10');
  });

  it('takes commands as a list or as a multi-line string', () => {
    const { workflows } = parse('workflows:\n  - name: a\n    provider: bash\n    commands: |\n      echo one\n      echo two\n');
    expect(build(workflows[0]!).commands).to.deep.equal(['echo one\necho two\n']);
  });

  it('runs before_run/setup, then commands; requirements go to the agent (spec version 2), not into the commands', () => {
    const text = 'workflows:\n  - name: a\n    provider: bash\n    requirements: req.txt\n    before_run: [echo b]\n    setup: [echo s]\n    commands: [echo c]\n';
    const spec = build(parse(text).workflows[0]!);
    expect(spec.commands).to.deep.equal(['echo b', 'echo s', 'echo c']);
    expect(spec).to.include({ requirements: 'req.txt', specVersion: 2 });
    // Without requirements the spec stays at version 1, which agents that predate venvs still run.
    expect(build(parse(text.replace('    requirements: req.txt\n', '')).workflows[0]!)).to.include({ specVersion: 1 }).and.not.have.property('requirements');
  });

  it('reads env as K=V and passes a bare K through from the submitting shell', () => {
    const text = 'workflows:\n  - name: a\n    provider: bash\n    env:\n      - A=1\n      - B=x=y\n      - FROM_SHELL\n      - UNSET_IN_SHELL\n    commands: [env]\n';
    const spec = build(parse(text).workflows[0]!, [], { FROM_SHELL: 'shell value' });
    expect(spec.env).to.deep.equal({ A: '1', B: 'x=y', FROM_SHELL: 'shell value' });
  });

  it('substitutes ${{ run.args }} shell-quoted, leaving ${{ run.name }} to the agent', () => {
    const text = 'workflows:\n  - name: a\n    provider: bash\n    commands:\n      - python args.py ${{ run.args }}\n      - echo ${{run.name}}\n';
    const spec = build(parse(text).workflows[0]!, ['-l', 'Hello, world!', "it's"]);
    // run.name is left for the agent to fill in, so that a restarted run sees its own name.
    expect(spec.commands).to.deep.equal([`python args.py -l 'Hello, world!' 'it'\\''s'`, 'echo ${{run.name}}']);
  });

  it('reads artifacts and deps in all their forms', () => {
    const text = [
      'workflows:',
      '  - name: a',
      '    provider: bash',
      '    commands: [ls]',
      '    artifacts: [data, {path: ./output, mount: true}, {path: /opt/conda/envs/myenv}]',
      '    deps: [":mnist_data", download, {tag: t}, {workflow: w}, {workflow: dstackai/dstack/hello-txt}]',
    ].join('\n');
    const spec = build(parse(text).workflows[0]!);
    expect(spec.artifacts).to.deep.equal([
      { path: 'data', mount: false },
      { path: 'output', mount: true },
      { path: '/opt/conda/envs/myenv', mount: false },
    ]);
    expect(spec.deps).to.deep.equal([
      { kind: 'tag', name: 'mnist_data', mount: false },
      { kind: 'workflow', name: 'download', mount: false },
      { kind: 'tag', name: 't', mount: false },
      { kind: 'workflow', name: 'w', mount: false },
      { kind: 'workflow', name: 'hello-txt', repo: 'dstackai/dstack', mount: false },
    ]);
  });

  it('reads resources: gpu count or map, sizes, interruptible, ports, working_dir', () => {
    const text = [
      'workflows:',
      '  - name: a',
      '    provider: bash',
      '    commands: [nvidia-smi]',
      '    ports: 2',
      '    working_dir: src',
      '    resources: {cpu: 4, memory: 64GB, shm_size: 512MB, interruptible: true, gpu: {name: V100, count: 2, memory: 16GB}}',
      '  - name: b',
      '    provider: bash',
      '    commands: [nvidia-smi]',
      '    resources: {gpu: 1}',
    ].join('\n');
    const [a, b] = parse(text).workflows;
    expect(build(a!).resources).to.deep.equal({ cpu: 4, memoryMiB: 65536, shmSizeMiB: 512, interruptible: true, local: false, gpu: { count: 2, name: 'V100', memoryMiB: 16384 } });
    expect(build(a!).portCount).to.equal(2);
    expect(build(a!).workingDir).to.equal('src');
    expect(build(b!).resources.gpu).to.deep.equal({ count: 1 });
    expect(sizeMiB('1TB')).to.equal(1024 * 1024);
  });

  it('builds the python provider command from file, args and version', () => {
    const text = 'workflows:\n  - name: p\n    provider: python\n    version: 3.9\n    file: train.py\n    args: ["--lr", "0.1 0.2"]\n    requirements: requirements.txt\n';
    const spec = build(parse(text).workflows[0]!);
    expect(spec.python).to.equal('3.9');
    expect(spec.commands).to.deep.equal(["python train.py --lr '0.1 0.2'"]);
    expect(spec.requirements).to.equal('requirements.txt');
  });

  it('passes run args to a python file when the workflow gives no args', () => {
    const spec = build(parse('workflows:\n  - name: p\n    provider: python\n    file: main.py\n').workflows[0]!, ['--n', '3']);
    expect(spec.commands).to.deep.equal(['python main.py --n 3']);
  });
});

describe('workflow spec: errors', () => {
  it('reports broken YAML as one line with file:line:col', () => {
    const { problems } = parse('workflows:\n  - name: a\n    provider: bash\n    commands: [echo\n', '.dstack/workflows.yaml');
    expect(problems).to.have.length.greaterThan(0);
    expect(formatProblem(problems[0]!)).to.match(/^\.dstack\/workflows\.yaml:\d+:\d+: invalid YAML: /);
    expect(formatProblem(problems[0]!)).not.to.include('\n');
  });

  it('reports every problem at once, each at its own line', () => {
    const text = 'workflows:\n  - name: a\n    provider: bsh\n    commands: [x]\n  - name: b\n    provider: bash\n    commandz: [x]\n    resources: {gpu: lots}\n';
    const lines = parse(text).problems.map(formatProblem);
    expect(lines).to.deep.equal([
      'workflows.yaml:3:15: workflow `a`: `provider`: expected one of: bash, python, docker, code, lab, notebook',
      'workflows.yaml:7:5: workflow `b`: unknown key `commandz`: remove it or check its spelling',
      'workflows.yaml:8:22: workflow `b`: `resources.gpu`: expected a GPU count, or {count, name, memory}',
    ]);
  });

  it('rejects a workflow without provider, saying what to add', () => {
    expect(parse('workflows:\n  - name: a\n    commands: [x]\n').problems.map(formatProblem)).to.deep.equal([
      'workflows.yaml:2:5: workflow `a`: workflow has no `provider`: add `provider: bash` (or python, docker, code, lab, notebook)',
    ]);
  });

  it('rejects environment as a map and a provider from a repo', () => {
    const text = 'workflows:\n  - name: a\n    provider: {repo: x/y, name: z}\n  - name: b\n    provider: bash\n    environment: {A: 1}\n    commands: [x]\n';
    const messages = parse(text).problems.map((p) => p.message);
    expect(messages[0]).to.include('use a built-in provider');
    expect(messages[1]).to.include('use `env:` with a list of `- K=V` items');
  });

  it('finds .dstack/workflows.yaml and .dstack/workflows/*.yaml, and rejects a name defined twice', async () => {
    const dir = tempDir('spec');
    try {
      mkdirSync(join(dir, '.dstack', 'workflows'), { recursive: true });
      writeFileSync(join(dir, '.dstack', 'workflows.yaml'), 'workflows:\n  - name: a\n    provider: bash\n    commands: [x]\n');
      writeFileSync(join(dir, '.dstack', 'workflows', 'more.yml'), 'workflows:\n  - name: b\n    provider: bash\n    commands: [x]\n');
      expect([...(await loadWorkflows(dir)).keys()].sort()).to.deep.equal(['a', 'b']);
      writeFileSync(join(dir, '.dstack', 'workflows', 'dup.yaml'), '# dup\nworkflows:\n  - name: a\n    provider: bash\n    commands: [y]\n');
      const err = await loadWorkflows(dir).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(SpecError);
      expect((err as SpecError).message).to.match(/dup\.yaml:3:1: workflow `a` is already defined at .*workflows\.yaml:2: rename one of them$/);
    } finally {
      removeAll(dir);
    }
  });
});
