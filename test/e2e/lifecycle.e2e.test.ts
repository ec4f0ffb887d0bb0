import { expect } from 'chai';
import { appendFileSync, existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { dstack, killAgents, makeHome, makeRepo, removeAll, spawnCli, tempDir, waitFor, type SpawnedCli } from '../support/cli.js';
import { alive } from '../support/process.js';

const WORKFLOWS = `workflows:
  - name: slow
    provider: bash
    env:
      - MARKER
    commands:
      - echo "start $RUN_NAME" >> "$MARKER"
      - echo "$$" >> "$MARKER.pids"
      - echo started
      - sleep 4
      - echo end >> "$MARKER"
      - echo finished
  - name: sleeper
    provider: bash
    commands:
      - trap 'echo got TERM; exit 143' TERM
      - echo started
      - sleep 60 & wait $!
  - name: stubborn
    provider: bash
    commands:
      - trap '' TERM
      - echo started
      - sleep 60
  - name: quick
    provider: bash
    commands:
      - echo quick
`;

interface RunJson {
  runName: string;
  status: string;
  reason: string | null;
  attempts: Array<{ agentId: string; attempt: number }>;
}

async function psJson(cwd: string, home: string, run?: string): Promise<RunJson[]> {
  const r = await dstack(['ps', '-a', '--json', ...(run ? [run] : [])], { cwd, home });
  return JSON.parse(r.stdout) as RunJson[];
}

/** Starts an attached `dstack run` and returns the child, with its output collected as it comes. */
function startAttached(args: string[], cwd: string, home: string, env: Record<string, string> = {}): SpawnedCli {
  return spawnCli(['run', ...args], { cwd, home, env });
}

/**
 * The \`slow\` job writes markers into the test's scratch folder, outside its own folder, which the
 * sandbox (on by default where bwrap works) keeps read-only and hidden behind a private /tmp.
 */
function sandboxOff(home: string): void {
  appendFileSync(join(home, 'config.yaml'), '  sandbox: off\n');
}

function runNameFrom(stderr: string): string | undefined {
  return /Run ([a-z]+-[a-z]+-\d+)/.exec(stderr)?.[1];
}

describe('e2e: agent failure, stop, detach and rm', function () {
  this.timeout(90_000);
  let repo: string;
  let home: string;
  let scratch: string;
  beforeEach(() => {
    repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
    home = makeHome({ visibilityTimeoutSec: 2, stopGraceSec: 2, maxParallelJobs: 2 });
    scratch = tempDir('scratch');
  });
  afterEach(async () => {
    await killAgents(home);
    removeAll(repo, home, scratch);
  });

  it('kill -9 of the agent mid-job: another agent finishes the job, once', async () => {
    sandboxOff(home);
    const marker = join(scratch, 'marker.txt');
    const run = startAttached(['slow'], repo, home, { MARKER: marker });
    const name = await waitFor(() => runNameFrom(run.out.stderr), 10_000, 'the run name');
    await waitFor(() => (run.out.stdout.includes('started') ? true : undefined), 15_000, 'the job to start');
    const [view] = await psJson(repo, home, name);
    const agentId = view?.attempts[0]?.agentId ?? '';
    const entry = JSON.parse(readFileSync(join(home, 'local', 'agents', `${agentId}.json`), 'utf8')) as { pid: number };
    process.kill(entry.pid, 'SIGKILL');

    const code = await run.exited;
    expect(code, run.out.stderr).to.equal(0);
    const [final] = await psJson(repo, home, name);
    expect(final?.status).to.equal('done');
    expect(final?.attempts.map((a) => a.attempt)).to.deep.equal([1, 2]);
    expect(final?.attempts[1]?.agentId).to.not.equal(agentId);
    // Once every attempt's job shell is gone, none can add to the marker.
    const pids = readFileSync(`${marker}.pids`, 'utf8').trim().split('\n').map(Number);
    await waitFor(() => (pids.every((pid) => !alive(pid)) ? true : undefined), 15_000, "the attempts' job shells to end");
    const lines = readFileSync(marker, 'utf8').trim().split('\n');
    expect(lines).to.deep.equal([`start ${name}`, `start ${name}`, 'end']);
    expect(run.out.stdout.match(/finished/g)).to.have.length(1);
  });

  it('stop sends SIGTERM: the job traps it and the run is stopped', async () => {
    const sub = await dstack(['run', '-d', 'sleeper'], { cwd: repo, home });
    const name = /Run ([a-z]+-[a-z]+-\d+)/.exec(sub.stdout)?.[1] ?? '';
    await waitFor(async () => ((await dstack(['logs', name], { cwd: repo, home })).stdout.includes('started') ? true : undefined), 15_000, 'start');
    const stop = await dstack(['stop', name, '-y'], { cwd: repo, home });
    expect(stop.code, stop.stderr).to.equal(0);
    expect(stop.stdout).to.equal(`Run ${name} stopped.\n`);
    expect((await dstack(['logs', name], { cwd: repo, home })).stdout).to.include('got TERM');
    expect((await psJson(repo, home, name))[0]?.status).to.equal('stopped');
  });

  it('stop kills a job that ignores SIGTERM after the grace period; -x kills at once', async () => {
    const names: string[] = [];
    for (let i = 0; i < 2; i++) {
      const sub = await dstack(['run', '-d', 'stubborn'], { cwd: repo, home });
      names.push(/Run ([a-z]+-[a-z]+-\d+)/.exec(sub.stdout)?.[1] ?? '');
    }
    for (const name of names) {
      await waitFor(async () => ((await dstack(['logs', name], { cwd: repo, home })).stdout.includes('started') ? true : undefined), 15_000, 'start');
    }
    let t = Date.now();
    const graceful = await dstack(['stop', names[0] ?? '', '-y'], { cwd: repo, home });
    const gracefulMs = Date.now() - t;
    t = Date.now();
    const aborted = await dstack(['stop', '-x', names[1] ?? '', '-y'], { cwd: repo, home });
    const abortMs = Date.now() - t;
    expect(graceful.stdout).to.include('stopped');
    expect(aborted.stdout).to.include('stopped');
    expect(gracefulMs).to.be.at.least(2000);
    expect(abortMs).to.be.below(gracefulMs);
    const [a] = await psJson(repo, home, names[1]);
    expect(a?.reason).to.include('SIGKILL');
  });

  it('stop of a queued run ends it before it starts', async () => {
    const busy = makeHome({ maxParallelJobs: 1, stopGraceSec: 1 });
    try {
      const first = await dstack(['run', '-d', 'sleeper'], { cwd: repo, home: busy });
      const second = await dstack(['run', '-d', 'quick'], { cwd: repo, home: busy });
      const name = /Run ([a-z]+-[a-z]+-\d+)/.exec(second.stdout)?.[1] ?? '';
      const stop = await dstack(['stop', name, '-y'], { cwd: repo, home: busy });
      expect(stop.stdout).to.equal(`Run ${name} stopped.\n`);
      const [view] = await psJson(repo, busy, name);
      expect(view?.reason).to.equal('stopped before it started');
      const firstName = /Run ([a-z]+-[a-z]+-\d+)/.exec(first.stdout)?.[1] ?? '';
      await dstack(['stop', firstName, '-y'], { cwd: repo, home: busy });
      // The agent takes the queued job's message after the first job and drops it without running it.
      const queued = join(busy, 'local', 'queues', 'jobs');
      await waitFor(() => (readdirSync(queued).some((n) => n.endsWith('.json')) ? undefined : true), 30_000, 'the queue to be empty');
      expect((await dstack(['logs', name], { cwd: repo, home: busy })).stdout).to.equal('');
    } finally {
      await killAgents(busy);
      removeAll(busy);
    }
  });

  it('Ctrl-C detaches, says how to reattach, and leaves the run going', async () => {
    const run = startAttached(['sleeper'], repo, home);
    await waitFor(() => (run.out.stdout.includes('started') ? true : undefined), 15_000, 'start');
    run.child.kill('SIGINT');
    const code = await run.exited;
    expect(code).to.equal(130);
    const name = runNameFrom(run.out.stderr) ?? '';
    expect(run.out.stderr).to.include(`Reattach with \`dstack attach ${name}\``);
    expect((await psJson(repo, home, name))[0]?.status).to.equal('running');
    await dstack(['stop', '-a', '-y'], { cwd: repo, home });
    expect((await psJson(repo, home, name))[0]?.status).to.equal('stopped');
  });

  it('logs -f follows a running job to its end', async () => {
    sandboxOff(home);
    const sub = await dstack(['run', '-d', 'slow'], { cwd: repo, home, env: { MARKER: join(scratch, 'm2') } });
    const name = /Run ([a-z]+-[a-z]+-\d+)/.exec(sub.stdout)?.[1] ?? '';
    const follow = await dstack(['logs', name, '-f'], { cwd: repo, home });
    expect(follow.stdout).to.equal('started\nfinished\n');
  });

  it('rm refuses an unfinished run and deletes a finished one', async () => {
    const sub = await dstack(['run', '-d', 'sleeper'], { cwd: repo, home });
    const name = /Run ([a-z]+-[a-z]+-\d+)/.exec(sub.stdout)?.[1] ?? '';
    const refused = await dstack(['rm', name, '-y'], { cwd: repo, home });
    expect(refused.code).to.not.equal(0);
    expect(refused.stderr.trim()).to.equal(`run ${name} is not finished yet: stop it first with \`dstack stop ${name}\``);
    await dstack(['stop', '-x', name, '-y'], { cwd: repo, home });
    const done = await dstack(['run', 'quick'], { cwd: repo, home });
    expect(done.code).to.equal(0);
    const noConfirm = await dstack(['rm', '-a'], { cwd: repo, home });
    expect(noConfirm.code).to.not.equal(0);
    expect(noConfirm.stderr).to.include('Add -y to confirm');
    const rm = await dstack(['rm', '-a', '-y'], { cwd: repo, home });
    expect(rm.code).to.equal(0);
    expect(await psJson(repo, home)).to.deep.equal([]);
    const reposDir = join(home, 'local', 'store', 'objects', 'repos');
    const left = existsSync(reposDir) ? readdirSync(reposDir, { recursive: true }).map(String) : [];
    expect(left.filter((p) => p.includes('/runs/'))).to.deep.equal([]);
  });
});
