import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { LocalStore } from '../../common/local/local-store.js';
import { createRun, runKeys, type RunRecord } from '../../common/runs.js';
import type { JobSpec } from '../../common/spec/job-spec.js';
import { CLI, dstack, killAgents, makeHome, makeRepo, removeAll, spawnCli, tempDir, waitFor, withRepoAndHome } from '../support/cli.js';

const WORKFLOWS = `workflows:
  - name: utf8
    provider: bash
    commands:
      - python3 -c "[print('é😀'*5000) for _ in range(100)]"
  - name: random
    provider: bash
    commands:
      - head -c 5000000 /dev/urandom > random.bin
      - sha256sum random.bin >&2
      - cat random.bin
  - name: three
    provider: bash
    commands:
      - for i in 1 2 3; do echo "line $i"; sleep 0.6; done
`;

/** Runs the CLI with stdout going to a file (exact bytes, whatever the CLI's exit does to a pipe). */
function dstackToFile(args: string[], o: { cwd: string; home: string; outFile: string }): Promise<{ code: number; stderr: string; stdout: Buffer }> {
  return new Promise((resolve, reject) => {
    const fd = openSync(o.outFile, 'w');
    const child = spawn(process.execPath, [CLI, ...args], { cwd: o.cwd, env: { ...process.env, DSTACK_HOME: o.home }, stdio: ['ignore', fd, 'pipe'] });
    closeSync(fd);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stderr, stdout: readFileSync(o.outFile) });
    });
  });
}

/** Writes the record of a run of `three` straight into a store, as if submitted to no queue: no agent will ever take it. */
function submittedRun(store: LocalStore, repoId: string, jobId: string): Promise<RunRecord> {
  return createRun(store, (runName): RunRecord => ({
    runName,
    repoId,
    workflow: 'three',
    jobId,
    submittedAt: new Date().toISOString(),
    maxAttempts: 1,
    spec: { specVersion: 1 } as JobSpec,
    overrides: [],
    toolVersion: 'test',
  }));
}

function runNameOf(stderr: string): string {
  const m = /Run ([a-z]+-[a-z]+-\d+)/.exec(stderr);
  if (!m?.[1]) throw new Error(`no run name in: ${stderr}`);
  return m[1];
}

/** The run's folder in the local store, and its repo id. */
function runDir(home: string, run: string): { dir: string; repoId: string } {
  const objects = join(home, 'local', 'store', 'objects');
  const walk = (d: string): string | undefined => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const full = join(d, e.name);
      if (e.name === run && d.endsWith('/runs')) return full;
      const found = walk(full);
      if (found) return found;
    }
    return undefined;
  };
  const dir = walk(objects);
  if (!dir) throw new Error(`run ${run} not in the store`);
  const key = relative(objects, dir);
  return { dir, repoId: key.slice('repos/'.length, key.length - `/runs/${run}`.length) };
}

/** The lines a user sees on stderr, without the notes `run` prints about the run itself. */
function problemLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.length > 0);
}

describe('e2e: dstack logs gives back exactly what the job wrote', function () {
  this.timeout(180_000);
  let repo: string;
  let home: string;
  let out: string;
  before(() => {
    repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
    home = makeHome();
    out = tempDir('out');
  });
  after(async () => {
    await killAgents(home);
    removeAll(repo, home, out);
  });

  it('non-ASCII output split across pipe reads comes back byte-identical, attached and from `logs`', async () => {
    const expected = Buffer.from(`${'é😀'.repeat(5000)}\n`.repeat(100), 'utf8');
    const run = await dstackToFile(['run', 'utf8'], { cwd: repo, home, outFile: join(out, 'utf8-run') });
    expect(run.code, run.stderr).to.equal(0);
    expect(run.stdout.equals(expected), `attached: ${run.stdout.length} bytes, ${run.stdout.toString('utf8').split('\uFFFD').length - 1} U+FFFD`).to.equal(true);
    const logs = await dstackToFile(['logs', runNameOf(run.stderr)], { cwd: repo, home, outFile: join(out, 'utf8-logs') });
    expect(logs.code, logs.stderr).to.equal(0);
    expect(logs.stdout.equals(expected), `logs: ${logs.stdout.length} bytes, ${logs.stdout.toString('utf8').split('\uFFFD').length - 1} U+FFFD`).to.equal(true);
    expect(logs.stderr).to.equal('');
  });

  it('5 MB of random bytes come back with the sha256 the job computed', async () => {
    const run = await dstackToFile(['run', 'random', '-d'], { cwd: repo, home, outFile: join(out, 'random-run') });
    expect(run.code, run.stderr).to.equal(0);
    const name = /Run ([a-z]+-[a-z]+-\d+)/.exec(run.stdout.toString())?.[1] ?? '';
    await waitFor(async () => ((await dstack(['ps', name], { cwd: repo, home })).stdout.includes('Done') ? true : undefined), 120_000, `${name} done`);
    const logs = await dstackToFile(['logs', name], { cwd: repo, home, outFile: join(out, 'random-logs') });
    expect(logs.code, logs.stderr).to.equal(0);
    const jobSha = /^([0-9a-f]{64}) {2}random\.bin$/m.exec(logs.stderr)?.[1];
    expect(jobSha, logs.stderr).to.be.a('string');
    expect(logs.stdout.length).to.equal(5_000_000);
    expect(createHash('sha256').update(logs.stdout).digest('hex')).to.equal(jobSha);
    // Stored at about its size: not base64, not JSON-escaped.
    const stored = readdirSync(join(runDir(home, name).dir, 'logs')).reduce((n, f) => n + readFileSync(join(runDir(home, name).dir, 'logs', f)).length, 0);
    expect(stored).to.be.lessThan(5_000_000 * 1.01);
  });
});

describe('e2e: damaged records and log chunks', function () {
  this.timeout(120_000);
  const t = withRepoAndHome(WORKFLOWS);

  const finishedRun = async (): Promise<string> => {
    const r = await dstack(['run', 'three'], { cwd: t.repo, home: t.home });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.equal('line 1\nline 2\nline 3\n');
    return runNameOf(r.stderr);
  };

  it('a damaged log chunk is named in one line, and the chunks around it are still shown', async () => {
    const run = await finishedRun();
    const logsDir = join(runDir(t.home, run).dir, 'logs');
    const chunks = readdirSync(logsDir).sort();
    expect(chunks.length, chunks.join(' ')).to.be.greaterThanOrEqual(3);
    const middle = chunks[1] ?? '';
    const middleText = (await dstack(['logs', run], { cwd: t.repo, home: t.home })).stdout.split('\n').filter((l) => l)[1];
    writeFileSync(join(logsDir, middle), Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x0a, 0x7b]));
    const r = await dstack(['logs', run], { cwd: t.repo, home: t.home });
    expect(r.code, r.stderr).to.equal(0);
    const lines = problemLines(r.stderr);
    expect(lines, r.stderr).to.have.length(1);
    expect(lines[0]).to.match(/^dstack: /).and.include(`${run}/logs/${middle}`);
    expect(r.stdout).to.include('line 1\n').and.include('line 3\n').and.not.include(`${middleText ?? 'x'}\n`);
  });

  it('a damaged final.json: ps, ps --json and logs name it in one line; rm still deletes the run', async () => {
    const good = await finishedRun();
    const run = await finishedRun();
    const { dir } = runDir(t.home, run);
    writeFileSync(join(dir, 'final.json'), '{"status": "do');
    const ps = await dstack(['ps', run], { cwd: t.repo, home: t.home });
    expect(ps.code).to.equal(1);
    expect(problemLines(ps.stderr), ps.stderr).to.have.length(1);
    expect(ps.stderr).to.include(`${run}/final.json`).and.not.match(/\n\s+at /);

    const json = await dstack(['ps', '-a', '--json'], { cwd: t.repo, home: t.home });
    expect(json.code, json.stderr).to.equal(0);
    const names = (JSON.parse(json.stdout) as Array<{ runName: string }>).map((x) => x.runName);
    expect(names).to.include(good).and.not.include(run);
    expect(problemLines(json.stderr), json.stderr).to.have.length(1);
    expect(json.stderr).to.include(`${run}/final.json`);

    const logs = await dstack(['logs', run], { cwd: t.repo, home: t.home });
    expect(logs.code, logs.stderr).to.equal(0);
    expect(logs.stdout).to.equal('line 1\nline 2\nline 3\n');
    expect(problemLines(logs.stderr), logs.stderr).to.have.length(1);
    expect(logs.stderr).to.match(/^dstack: /).and.include(`${run}/final.json`);

    const rm = await dstack(['rm', run, '-y'], { cwd: t.repo, home: t.home });
    expect(rm.code, rm.stderr).to.equal(0);
    expect(rm.stdout).to.include(`Deleted ${run}.`);
    expect(problemLines(rm.stderr), rm.stderr).to.have.length(1);
    expect(rm.stderr).to.include(`${run}/final.json`);
    expect(existsSync(dir)).to.equal(false);
    const after = await dstack(['ps', '-a'], { cwd: t.repo, home: t.home });
    expect(after.stdout).to.include(good).and.not.include(run);
  });

  it('a damaged run.json: ps names it in one line; logs still show the output; rm deletes the run and its index entry', async () => {
    const run = await finishedRun();
    const { dir } = runDir(t.home, run);
    writeFileSync(join(dir, 'run.json'), 'garbage');
    const ps = await dstack(['ps', run], { cwd: t.repo, home: t.home });
    expect(ps.code).to.equal(1);
    expect(problemLines(ps.stderr), ps.stderr).to.have.length(1);
    expect(ps.stderr).to.include(`${run}/run.json`).and.not.match(/\n\s+at /);
    const logs = await dstack(['logs', run], { cwd: t.repo, home: t.home });
    expect(logs.code, logs.stderr).to.equal(0);
    expect(logs.stdout).to.equal('line 1\nline 2\nline 3\n');
    const rm = await dstack(['rm', run, '-y'], { cwd: t.repo, home: t.home });
    expect(rm.code, rm.stderr).to.equal(0);
    expect(rm.stderr).to.include(`${run}/run.json`);
    expect(existsSync(dir)).to.equal(false);
    expect((await dstack(['ps', '-a'], { cwd: t.repo, home: t.home })).stdout).to.not.include(run);
  });

  it('an unfinished run with a damaged run.json is named in one line by ps, which still lists the others', async () => {
    const good = await finishedRun();
    const { repoId } = runDir(t.home, good);
    const store = new LocalStore(join(t.home, 'local', 'store'));
    const record = await submittedRun(store, repoId, 'j-damaged');
    await store.put(runKeys.record(repoId, record.runName), '{"runName": 42}');
    const ps = await dstack(['ps', '-a'], { cwd: t.repo, home: t.home });
    expect(ps.code, ps.stderr).to.equal(0);
    expect(ps.stdout).to.include(good);
    expect(problemLines(ps.stderr), ps.stderr).to.have.length(1);
    expect(ps.stderr).to.include(`${record.runName}/run.json`);
  });
});

describe('e2e: logs -f on a queued run', function () {
  this.timeout(30_000);
  const t = withRepoAndHome(WORKFLOWS);

  it('says that it waits for an agent, on stderr, and stops following on Ctrl+C', async () => {
    // A run submitted to no queue: no agent will ever take it.
    const first = await dstack(['run', 'three'], { cwd: t.repo, home: t.home });
    const { repoId } = runDir(t.home, runNameOf(first.stderr));
    const record = await submittedRun(new LocalStore(join(t.home, 'local', 'store')), repoId, 'j-queued');
    const { child, out, exited } = spawnCli(['logs', record.runName, '-f'], { cwd: t.repo, home: t.home });
    const said = new Promise<void>((resolve) =>
      child.stderr.on('data', () => {
        if (/waiting for an agent/.test(out.stderr)) resolve();
      }),
    );
    await Promise.race([said, exited.then(() => undefined)]);
    child.kill('SIGINT');
    await exited;
    expect(out.stderr).to.match(new RegExp(`^dstack: run ${record.runName} is queued: waiting for an agent`, 'm'));
    expect(out.stdout).to.equal('');
  });
});
