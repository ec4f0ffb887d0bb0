import { expect } from 'chai';
import { UsageError } from '../../common/errors.js';
import { parseSince } from '../../coordinator/commands/logs.js';
import { repoIdFor } from '../../coordinator/code-capture.js';
import { formatTable } from '../../coordinator/output.js';
import { RUN_OPTIONS, parseRunArgv, splitRunArgv, type RunOptionName } from '../../coordinator/run-args.js';
import type { RunOptions } from '../../coordinator/commands/run.js';
import { didYouMean, editDistance } from '../../coordinator/workflow-names.js';
import { parseWorkflowsText } from '../../common/spec/load.js';
import type { SpecProblem } from '../../common/errors.js';

describe('run argument splitting (0.0.14 style)', () => {
  it('sends everything after the workflow that is not a dstack option to the workflow', () => {
    expect(splitRunArgv(['print-args', '-l', 'Hello, world!'])).to.deep.equal({ options: [], overrides: [], workflow: 'print-args', args: ['-l', 'Hello, world!'] });
  });
  it('takes dstack options on either side of the workflow name', () => {
    expect(splitRunArgv(['-d', 'train', '--dry-run', '-t', 'best', '-e', 'A=1', '--gpu', '2', '-i', '--epochs', '3'])).to.deep.equal({
      options: ['-d', '--dry-run', '-t', 'best', '-e', 'A=1', '--gpu', '2', '-i'],
      overrides: ['-e', 'A=1', '--gpu', '2', '-i'],
      workflow: 'train',
      args: ['--epochs', '3'],
    });
  });
  it('stops taking options at the first workflow argument, and after --', () => {
    expect(splitRunArgv(['train', '--epochs', '3', '-d'])).to.deep.equal({ options: [], overrides: [], workflow: 'train', args: ['--epochs', '3', '-d'] });
    expect(splitRunArgv(['train', '--', '-d'])).to.deep.equal({ options: [], overrides: [], workflow: 'train', args: ['-d'] });
  });
  it('rejects an unknown option before the workflow name', () => {
    expect(() => splitRunArgv(['--bogus', 'train'])).to.throw(UsageError, /unknown option --bogus/);
  });
});

type Parsed = Omit<RunOptions, 'workflow'>;
const DEFAULTS: Parsed = {
  args: ['ARG'],
  detach: false,
  dryRun: false,
  tag: undefined,
  force: false,
  useCache: true,
  overrides: { env: [], artifacts: [], deps: [] },
  overrideArgv: [],
};

/**
 * Each option of RUN_OPTIONS as a user types it (long name, alias, --no- form), and what runCommand
 * must get. Keyed by the table, so an option added there without a case here does not type-check.
 */
const CASES: Record<RunOptionName, [string[], Partial<Parsed>][]> = {
  detach: [[['--detach'], { detach: true }], [['-d'], { detach: true }]],
  'dry-run': [[['--dry-run'], { dryRun: true }]],
  tag: [[['--tag', 'best'], { tag: 'best' }], [['-t', 'best'], { tag: 'best' }], [['--tag=best'], { tag: 'best' }]],
  force: [[['--force'], { force: true }]],
  cache: [[['--cache'], { useCache: true }], [['--no-cache'], { useCache: false }]],
  env: [[['--env', 'A=1'], { overrides: { env: ['A=1'], artifacts: [], deps: [] }, overrideArgv: ['--env', 'A=1'] }], [['-e', 'A=1'], { overrides: { env: ['A=1'], artifacts: [], deps: [] }, overrideArgv: ['-e', 'A=1'] }]],
  artifact: [[['-a', 'out'], { overrides: { env: [], artifacts: ['out'], deps: [] }, overrideArgv: ['-a', 'out'] }], [['--artifact', 'out'], { overrides: { env: [], artifacts: ['out'], deps: [] }, overrideArgv: ['--artifact', 'out'] }]],
  dep: [[['--dep', ':best'], { overrides: { env: [], artifacts: [], deps: [':best'] }, overrideArgv: ['--dep', ':best'] }]],
  'working-dir': [[['-w', 'src'], { overrides: { env: [], artifacts: [], deps: [], workingDir: 'src' }, overrideArgv: ['-w', 'src'] }], [['--working-dir', 'src'], { overrides: { env: [], artifacts: [], deps: [], workingDir: 'src' }, overrideArgv: ['--working-dir', 'src'] }]],
  cpu: [[['--cpu', '4'], { overrides: { env: [], artifacts: [], deps: [], cpu: 4 }, overrideArgv: ['--cpu', '4'] }]],
  memory: [[['--memory', '16GB'], { overrides: { env: [], artifacts: [], deps: [], memory: '16GB' }, overrideArgv: ['--memory', '16GB'] }]],
  gpu: [[['--gpu', '2'], { overrides: { env: [], artifacts: [], deps: [], gpu: 2 }, overrideArgv: ['--gpu', '2'] }]],
  'gpu-name': [[['--gpu-name', 'V100'], { overrides: { env: [], artifacts: [], deps: [], gpuName: 'V100' }, overrideArgv: ['--gpu-name', 'V100'] }]],
  'gpu-memory': [[['--gpu-memory', '16GB'], { overrides: { env: [], artifacts: [], deps: [], gpuMemory: '16GB' }, overrideArgv: ['--gpu-memory', '16GB'] }]],
  'shm-size': [[['--shm-size', '8GB'], { overrides: { env: [], artifacts: [], deps: [], shmSize: '8GB' }, overrideArgv: ['--shm-size', '8GB'] }]],
  interruptible: [[['-i'], { overrides: { env: [], artifacts: [], deps: [], interruptible: true }, overrideArgv: ['-i'] }], [['--interruptible'], { overrides: { env: [], artifacts: [], deps: [], interruptible: true }, overrideArgv: ['--interruptible'] }]],
};

describe('run options: one table (RUN_OPTIONS)', () => {
  it('has a case for every option of the table, and every alias', () => {
    expect(Object.keys(CASES).sort()).to.deep.equal(Object.keys(RUN_OPTIONS).sort());
    for (const [name, option] of Object.entries(RUN_OPTIONS)) {
      const typed = (CASES[name as RunOptionName] ?? []).map(([argv]) => argv[0]);
      expect(typed, name).to.include(`--${name}`);
      if ('alias' in option) expect(typed, name).to.include(`-${option.alias}`);
    }
  });
  for (const [name, cases] of Object.entries(CASES)) {
    for (const [typed, expected] of cases) {
      it(`takes ${typed.join(' ')} (${name}) before the workflow name and after it`, () => {
        for (const argv of [[...typed, 'hi', 'ARG'], ['hi', ...typed, 'ARG']]) {
          const parsed = parseRunArgv(argv);
          expect(parsed.workflow, argv.join(' ')).to.equal('hi');
          expect(parsed.options, argv.join(' ')).to.deep.equal({ ...DEFAULTS, ...expected });
        }
      });
    }
  }
  it('dry-runs `run hi --cache --dry-run`, and `run --cache hi` names workflow hi', () => {
    expect(parseRunArgv(['hi', '--cache', '--dry-run']).options).to.include({ dryRun: true, useCache: true });
    expect(parseRunArgv(['--cache', 'hi']).workflow).to.equal('hi');
  });
  it('lets the global flags through on either side', () => {
    expect(parseRunArgv(['--debug', 'hi', '-h', 'ARG']).options).to.deep.equal(DEFAULTS);
  });
  it('leaves no workflow when none is named', () => {
    expect(parseRunArgv(['-d']).workflow).to.equal(undefined);
  });
  it('says an option at the end needs its value', () => {
    expect(() => parseRunArgv(['hi', '-t'])).to.throw(UsageError, /-t needs a value/);
    expect(() => parseRunArgv(['--gpu'])).to.throw(UsageError, /--gpu needs a value/);
  });
});

describe('did you mean', () => {
  it('counts edits', () => {
    expect(editDistance('train', 'trian')).to.equal(1);
    expect(editDistance('kitten', 'sitting')).to.equal(3);
    expect(editDistance('hello', 'helo')).to.equal(1);
    expect(editDistance('', 'abc')).to.equal(3);
  });
  it('suggests the closest name when it is close enough to be a typo', () => {
    expect(didYouMean('trian', ['train', 'test', 'evaluate'])).to.equal('train');
    expect(didYouMean('helo', ['hello', 'help-me'])).to.equal('hello');
    expect(didYouMean('Train', ['train'])).to.equal('train');
    expect(didYouMean('nope', ['a', 'train'])).to.equal(undefined);
  });
});

describe('YAML syntax errors', () => {
  const problemsOf = (text: string): SpecProblem[] => {
    const problems: SpecProblem[] = [];
    parseWorkflowsText(text, 'w.yaml', problems);
    return problems;
  };
  it('are reported at their real line and column', () => {
    const [p] = problemsOf('workflows:\n  - name: a\n    provider: bash\n    commands: [echo\n');
    expect(p).to.include({ line: 5, col: 1 });
    expect(p?.message).to.match(/^invalid YAML: /);
  });
  it('point inside the file, not at 1:1, for a bad indentation in the middle', () => {
    const [p] = problemsOf('workflows:\n  - name: a\n    provider: bash\n   commands: x\n  - name: b\n');
    expect(p).to.not.include({ line: 1, col: 1 });
    expect(p?.line).to.equal(4);
  });
});

describe('logs --since', () => {
  const now = Date.parse('2022-11-01T12:00:00Z');
  it('reads durations and ISO times', () => {
    expect(parseSince('90s', now)).to.equal(now - 90_000);
    expect(parseSince('1h', now)).to.equal(now - 3_600_000);
    expect(parseSince('2d', now)).to.equal(now - 172_800_000);
    expect(parseSince('2022-11-01T10:00:00Z', now)).to.equal(Date.parse('2022-11-01T10:00:00Z'));
  });
  it('says what to write when it cannot read the value', () => {
    expect(() => parseSince('yesterday', now)).to.throw(UsageError, /use a duration such as 30m/);
  });
});

describe('repo ids', () => {
  it('are the same for the SSH and HTTPS remotes of one repo', () => {
    expect(repoIdFor('/x', 'git@github.com:dstackai/dstack-examples.git')).to.equal('github.com/dstackai/dstack-examples');
    expect(repoIdFor('/x', 'https://github.com/dstackai/dstack-examples')).to.equal('github.com/dstackai/dstack-examples');
    expect(repoIdFor('/x', 'https://user@gitlab.com/a/b.git/')).to.equal('gitlab.com/a/b');
  });
  it('fall back to the folder name and a hash of its path without a remote', () => {
    expect(repoIdFor('/home/me/my project', null)).to.match(/^local\/my-project-[0-9a-f]{10}$/);
    expect(repoIdFor('/a/p', null)).to.not.equal(repoIdFor('/b/p', null));
  });
});

describe('tables', () => {
  it('aligns columns and trims trailing space', () => {
    expect(formatTable(['RUN', 'STATUS'], [['a-b-1', 'Done'], ['long-name-12', '']])).to.equal('RUN           STATUS\na-b-1         Done\nlong-name-12\n');
  });
});
