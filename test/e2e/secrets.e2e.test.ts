import { expect } from 'chai';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, dstack, filesHolding, withRepoAndHome, type CliResult } from '../support/cli.js';

const WORKFLOWS = `workflows:
  - name: show
    provider: bash
    commands:
      - echo "token=$API_TOKEN end"
      - printf %s "$API_TOKEN" | sha256sum
  - name: pinned
    provider: bash
    env:
      - FROM_SHELL
      - PLAIN=visible
    commands:
      - echo "pinned=$FROM_SHELL plain=$PLAIN"
      - printf %s "$FROM_SHELL" | sha256sum
`;

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

/** The CLI with `input` on its stdin (not a terminal). */
function dstackWithInput(args: string[], input: string, o: { cwd: string; home: string }): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [CLI, ...args], { cwd: o.cwd, env: { ...process.env, DSTACK_HOME: o.home }, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err && typeof err.code === 'number' ? err.code : err ? 1 : 0;
      resolve({ code, stdout, stderr });
    });
    child.on('error', reject);
    child.stdin?.end(input);
  });
}


const runName = (r: CliResult): string => /Run ([a-z]+-[a-z]+-\d+)/.exec(r.stdout + r.stderr)?.[1] ?? '';

describe('e2e: secrets on the local backend', function () {
  this.timeout(90_000);
  // One agent, started by a CLI whose environment holds no value: the job can see only what dstack injects.
  const t = withRepoAndHome(WORKFLOWS, { maxParallelJobs: 1 });
  const token = `tok-${randomBytes(12).toString('hex')}`;
  const token2 = `tok2-${randomBytes(12).toString('hex')}`;
  const shellValue = `shell-${randomBytes(12).toString('hex')}`;
  const outputs: string[] = [];
  const cli = async (args: string[], env?: Record<string, string>): Promise<CliResult> => {
    const r = await dstack(args, { cwd: t.repo, home: t.home, ...(env ? { env } : {}) });
    outputs.push(r.stdout, r.stderr);
    return r;
  };

  it('adds a secret from stdin, lists names only, and keeps it in 0600 files in 0700 folders', async () => {
    const add = await dstackWithInput(['secrets', 'add', 'API_TOKEN'], `${token}\n`, { cwd: t.repo, home: t.home });
    expect(add.code, add.stderr).to.equal(0);
    outputs.push(add.stdout, add.stderr);
    const list = await cli(['secrets', 'list']);
    expect(list.code, list.stderr).to.equal(0);
    expect(list.stdout).to.equal('API_TOKEN\n');
    const again = await cli(['secrets', 'add', 'API_TOKEN', 'x']);
    expect(again.code).to.equal(1);
    expect(again.stderr).to.include('secrets update API_TOKEN');
    const bad = await cli(['secrets', 'add', '1BAD', 'x']);
    expect(bad.code).to.equal(2);
    const store = join(t.home, 'local', 'secrets');
    expect(filesHolding(t.home, token).map((f) => f.split('/').slice(0, 2).join('/'))).to.deep.equal(['local/secrets']);
    const walk = (d: string): void => {
      expect(statSync(d).mode & 0o777, d).to.equal(0o700);
      for (const e of readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(join(d, e.name));
        else expect(statSync(join(d, e.name)).mode & 0o777, e.name).to.equal(0o600);
      }
    };
    walk(store);
  });

  it('injects the secret into the job and masks it in the output and in logs', async () => {
    const r = await cli(['run', 'show']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.include('token=*** end\n');
    expect(r.stdout).to.include(sha(token));
    const logs = await cli(['logs', runName(r)]);
    expect(logs.stdout).to.equal(`token=*** end\n${sha(token)}  -\n`);
  });

  it("pins a bare env name's value to the run: in no record or message, yet the job and its restart see it", async () => {
    const r = await cli(['run', 'pinned'], { FROM_SHELL: shellValue });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.include('pinned=*** plain=visible\n');
    expect(r.stdout).to.include(sha(shellValue));
    const name = runName(r);
    const ps = await cli(['ps', name, '--json']);
    expect(ps.stdout).to.include('FROM_SHELL');
    const dry = await cli(['run', 'pinned', '--dry-run'], { FROM_SHELL: shellValue });
    expect(dry.code, dry.stderr).to.equal(0);
    expect(JSON.parse(dry.stdout)).to.deep.include({ env: { PLAIN: 'visible' }, runSecrets: ['FROM_SHELL'] });
    // The restart runs without the variable in its shell: the value pinned to the first run is used.
    const again = await cli(['restart', name]);
    expect(again.code, again.stderr).to.equal(0);
    expect(again.stdout).to.include(sha(shellValue));
  });

  it('restart takes the current value of a named secret', async () => {
    const first = await cli(['run', 'show', '-d']);
    const upd = await cli(['secrets', 'update', 'API_TOKEN', token2]);
    expect(upd.code, upd.stderr).to.equal(0);
    const again = await cli(['restart', runName(first)]);
    expect(again.code, again.stderr).to.equal(0);
    expect(again.stdout).to.include(sha(token2));
  });

  it('leaves no value anywhere but the secret store: not in the store, the queue, the logs or the CLI output', () => {
    for (const value of [token, token2, shellValue]) {
      const where = filesHolding(t.home, value).filter((f) => !f.startsWith('local/secrets/'));
      expect(where, value).to.deep.equal([]);
      expect(outputs.some((o) => o.includes(value))).to.equal(false);
    }
    expect(filesHolding(t.home, shellValue).length).to.be.greaterThan(0);
  });

  it('rm of a run deletes the values pinned to it', async () => {
    const r = await cli(['run', 'pinned'], { FROM_SHELL: shellValue });
    expect(r.code, r.stderr).to.equal(0);
    const before = filesHolding(t.home, shellValue).length;
    const rm = await cli(['rm', runName(r), '-y']);
    expect(rm.code, rm.stderr).to.equal(0);
    expect(filesHolding(t.home, shellValue).length).to.equal(before - 1);
  });

  it('asks for the value at a hidden prompt on a terminal', async function () {
    try {
      execFileSync('script', ['--version'], { stdio: 'ignore' });
    } catch {
      this.skip();
    }
    const value = `typed-${randomBytes(6).toString('hex')}`;
    // util-linux `script` gives the CLI a pseudo-terminal; what the terminal shows comes back on stdout.
    const child = spawn('script', ['-qec', `${process.execPath} ${CLI} secrets add TYPED`, '/dev/null'], {
      cwd: t.repo,
      env: { ...process.env, DSTACK_HOME: t.home },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    let screen = '';
    const prompted = new Promise<void>((resolve) =>
      child.stdout.on('data', (d: Buffer) => {
        screen += d.toString();
        if (screen.includes('Value of TYPED:')) resolve();
      }),
    );
    const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
    await prompted;
    child.stdin.write(`${value}\r`);
    expect(await exited, screen).to.equal(0);
    expect(screen).to.include('Secret TYPED added.');
    expect(screen).to.not.include(value);
    const [file, ...more] = filesHolding(t.home, value);
    expect(more).to.deep.equal([]);
    expect(file).to.match(/^local\/secrets\/[0-9a-f]{64}\/TYPED$/);
    expect(readFileSync(join(t.home, file ?? ''), 'utf8')).to.equal(value);
  });

  it('deletes a secret with -y', async () => {
    const del = await cli(['secrets', 'delete', 'API_TOKEN', '-y']);
    expect(del.code, del.stderr).to.equal(0);
    expect((await cli(['secrets', 'list'])).stdout).to.equal('TYPED\n');
  });
});
