import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, ROOT, dstack, killAgents, makeHome, makeRepo, removeAll, withRepoAndHome } from '../support/cli.js';

/** 60,000 numbered lines, about 330 KB: more than a pipe and Node's stream buffer hold together. */
const FLOOD_LINES = 60_000;
const FLOOD = Array.from({ length: FLOOD_LINES }, (_, i) => `${i + 1}`).join('\n') + '\n';

const WORKFLOWS = `workflows:
  - name: flood
    help: Prints many lines
    provider: bash
    commands:
      - seq 1 ${FLOOD_LINES}
  - name: train
    help: Trains the model
    provider: bash
    commands:
      - echo "args=\${{ run.args }}"
`;

interface PipeResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs the built CLI with a reader that starts reading stdout only after `delayMs`, like `| (sleep 1; wc -c)`. */
function slowReader(args: string[], o: { cwd: string; home: string; delayMs: number }): Promise<PipeResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: o.cwd, env: { ...process.env, DSTACK_HOME: o.home }, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.pause();
    child.stdout.on('data', (d: Buffer) => out.push(d));
    const timer = setTimeout(() => child.stdout.resume(), o.delayMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr });
    });
  });
}

/** Runs the built CLI and closes its stdout after the first chunk, like `| head -1`. */
function closingReader(args: string[], o: { cwd: string; home: string }): Promise<{ code: number | null; signal: string | null; first: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: o.cwd, env: { ...process.env, DSTACK_HOME: o.home }, stdio: ['ignore', 'pipe', 'pipe'] });
    let first = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.once('data', (d: Buffer) => {
      first = d.toString().split('\n')[0] ?? '';
      child.stdout.destroy();
    });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, first, stderr }));
  });
}

describe('e2e: the CLI exits when its output has drained', function () {
  this.timeout(60_000);
  let repo: string;
  let home: string;
  let runName: string;
  before(async () => {
    repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
    home = makeHome();
    const r = await dstack(['run', '-d', 'flood'], { cwd: repo, home });
    expect(r.code, r.stderr).to.equal(0);
    runName = /Run ([a-z]+-[a-z]+-\d+)/.exec(r.stdout)?.[1] ?? '';
    // Follow it to its end, so that `logs` below replays a finished run.
    const f = await dstack(['logs', runName, '-f'], { cwd: repo, home });
    expect(f.code, f.stderr).to.equal(0);
  });
  after(async () => {
    await killAgents(home);
    removeAll(repo, home);
  });

  it('`dstack logs RUN | (sleep 1; cat)` gets every byte', async () => {
    const r = await slowReader(['logs', runName], { cwd: repo, home, delayMs: 1000 });
    expect(r.stderr).to.equal('');
    expect(r.code).to.equal(0);
    expect(r.stdout.length).to.equal(Buffer.byteLength(FLOOD));
    expect(r.stdout.toString() === FLOOD, 'the bytes differ').to.equal(true);
  });

  it('an attached `dstack run flood` to a slow reader loses no line', async () => {
    const r = await slowReader(['run', 'flood'], { cwd: repo, home, delayMs: 1000 });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.length).to.equal(Buffer.byteLength(FLOOD));
    expect(r.stdout.toString() === FLOOD, 'the bytes differ').to.equal(true);
  });

  it('`dstack logs RUN | head -1` ends quietly, without a stack trace', async () => {
    const r = await closingReader(['logs', runName], { cwd: repo, home });
    expect(r.first).to.equal('1');
    expect(r.stderr).to.equal('');
    expect(r.signal).to.equal(null);
    expect(r.code).to.equal(0);
  });

  it('`dstack logs RUN -f | head -1` ends quietly too', async () => {
    const r = await closingReader(['logs', runName, '-f'], { cwd: repo, home });
    expect(r.first).to.equal('1');
    expect(r.stderr).to.equal('');
    expect(r.code).to.equal(0);
  });
});

describe('e2e: the command line', function () {
  this.timeout(60_000);
  const t = withRepoAndHome(WORKFLOWS);
  const runs = async (): Promise<string> => (await dstack(['ps', '-a', '--json'], { cwd: t.repo, home: t.home })).stdout;

  it('`dstack run train --cache --dry-run` dry-runs: --cache is an option, not a workflow argument', async () => {
    const before = await runs();
    const r = await dstack(['run', 'train', '--cache', '--dry-run', 'x'], { cwd: t.repo, home: t.home });
    expect(r.code, r.stderr).to.equal(0);
    const spec = JSON.parse(r.stdout) as { workflow: string; commands: string[] };
    expect(spec.workflow).to.equal('train');
    expect(spec.commands).to.deep.equal(['echo "args=x"']);
    expect(await runs()).to.equal(before);
  });

  it('`dstack run --cache train` runs train', async () => {
    const r = await dstack(['run', '--cache', '--no-cache', 'train', 'y'], { cwd: t.repo, home: t.home });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.equal('args=y\n');
  });

  it('every usage error exits 2 with one line and no stack trace', async () => {
    for (const args of [['run', '--bogus', 'train'], ['run', 'train', '-t'], ['run', '--gpu'], ['bogus'], ['ps', '--bogus'], ['tags'], ['logs'], []]) {
      const r = await dstack(args, { cwd: t.repo, home: t.home });
      expect(r.code, `dstack ${args.join(' ')}: ${r.stderr}`).to.equal(2);
      expect(r.stderr.trimEnd().split('\n'), args.join(' ')).to.have.length(1);
      expect(r.stderr, args.join(' ')).not.to.match(/\bat .*\.js:\d+/);
      expect(r.stdout, args.join(' ')).to.equal('');
    }
  });

  it('reports a YAML syntax error at its line and column', async () => {
    const broken = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: a\n    provider: bash\n    commands: [echo\n' });
    const r = await dstack(['run', 'a'], { cwd: broken, home: t.home });
    removeAll(broken);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/^\.dstack\/workflows\.yaml:5:1: invalid YAML: /);
  });

  it('`dstack --version` prints the version of package.json', async () => {
    const r = await dstack(['--version'], { cwd: t.repo, home: t.home });
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(r.code).to.equal(0);
    expect(r.stdout).to.equal(`${pkg.version}\n`);
  });

  it('`dstack run` without a workflow lists the workflows with their help, and exits 2', async () => {
    const r = await dstack(['run'], { cwd: t.repo, home: t.home });
    expect(r.code).to.equal(2);
    expect(r.stdout).to.equal('');
    expect(r.stderr).to.equal('name a workflow: dstack run WORKFLOW [ARGS...]\nWorkflows:\n  flood  Prints many lines\n  train  Trains the model\n');
  });

  it('an unknown workflow gets a "did you mean" when it looks like a typo', async () => {
    const r = await dstack(['run', 'trian'], { cwd: t.repo, home: t.home });
    expect(r.code).to.equal(1);
    expect(r.stderr).to.equal('workflow `trian` is not defined in .dstack/workflows.yaml or .dstack/workflows/*.yaml; did you mean `train`? (defined: flood, train)\n');
  });

  it('`dstack completion` prints a completion script; completion offers command names, and workflow names after run', async () => {
    const script = await dstack(['completion'], { cwd: t.repo, home: t.home });
    expect(script.code).to.equal(0);
    expect(script.stdout).to.include('dstack --get-yargs-completions');
    const words = await dstack(['--get-yargs-completions', 'dstack', 'ta'], { cwd: t.repo, home: t.home });
    expect(words.code).to.equal(0);
    expect(words.stdout.split('\n')).to.include.members(['tags', 'run', 'init']);
    const workflows = await dstack(['--get-yargs-completions', 'dstack', 'run', ''], { cwd: t.repo, home: t.home });
    expect(workflows.stdout).to.equal('flood\ntrain\n');
    const typed = await dstack(['--get-yargs-completions', 'dstack', 'run', 'tr'], { cwd: t.repo, home: t.home });
    expect(typed.stdout).to.equal('train\n');
    expect(typed.stderr).to.equal('');
  });

  it('`dstack init` writes a commented starter that runs as it is, and never overwrites it', async () => {
    const fresh = makeRepo({ 'README.md': 'x\n' });
    try {
      const r = await dstack(['init'], { cwd: fresh, home: t.home });
      expect(r.code, r.stderr).to.equal(0);
      const file = join(fresh, '.dstack', 'workflows.yaml');
      const text = readFileSync(file, 'utf8');
      expect(text).to.match(/^# /);
      const run = await dstack(['run', 'hello', 'a', 'b'], { cwd: fresh, home: t.home });
      expect(run.code, run.stderr).to.equal(0);
      expect(run.stdout).to.match(/^Hello from run [a-z]+-[a-z]+-\d+\nargs=\[a b\]\n$/);
      writeFileSync(file, 'workflows: []\n');
      const again = await dstack(['init'], { cwd: fresh, home: t.home });
      expect(again.code).to.equal(1);
      expect(again.stderr).to.equal('.dstack/workflows.yaml already exists: dstack init leaves it as it is (list its workflows with `dstack run`)\n');
      expect(readFileSync(file, 'utf8')).to.equal('workflows: []\n');
    } finally {
      removeAll(fresh);
    }
  });
});

describe('e2e: long-running commands end on Ctrl-C', function () {
  this.timeout(20_000);
  it('`dstack coordinator --interval 3600` ends at once on SIGINT, with nothing left pending', async () => {
    const repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
    const home = makeHome();
    const child = spawn(process.execPath, [CLI, 'coordinator', '--interval', '3600'], { cwd: repo, env: { ...process.env, DSTACK_HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let stdout = '';
      const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      await new Promise<void>((resolve) =>
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
          if (/ backlog /.test(stdout)) resolve();
        }),
      );
      child.kill('SIGINT');
      expect(await exited).to.equal(0);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      removeAll(repo, home);
    }
  });
});
