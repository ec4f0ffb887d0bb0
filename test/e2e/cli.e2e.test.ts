import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { CLI, dstack, killAgents, makeHome, makeRepo, removeAll } from '../support/cli.js';

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
