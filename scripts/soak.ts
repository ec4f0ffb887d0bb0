// Soak: faults in loops against the built CLI and agent (`npm run soak` builds first), then a table.
//   agent kill -9   kill -9 of the agent holding a job, at a random point of the job (local backend)
//   agent SIGSTOP   SIGSTOP of that agent for longer than its lease, then SIGCONT (local backend)
//   CLI kill -9     kill -9 of `dstack run -d` at a random point of its submit (local backend)
//   S3 outage       5 s of failed S3 requests while a job runs (aws backend on fauxqs, behind the fault proxy)
// Every loop checks: no run ran twice (markers the job writes outside the repo), every run reaches a
// final status within a bound, artifacts download whole (sha256 the job wrote), and no job folder is
// left in the agents' work dirs at the end.
//
// SOAK_SCALE=0.1 runs a tenth of each count (at least 1); SOAK_ONLY=kill,stop,cli,s3 picks loops;
// SOAK_MAX_MIN bounds the whole soak (default 45). Exit code 1 when any check failed.
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT, CLI, dstack, makeHome, makeRepo, removeAll, tempDir, waitFor } from '../test/support/cli.js';
import { startEmulator, uniqueName } from '../test/support/fauxqs.js';
import { SecretsManagerFake } from '../test/support/secrets-manager-fake.js';
import { S3Proxy } from '../test/support/s3-proxy.js';
import { SOAK_WORKFLOWS, agents, alive, corruptDownload, doubleRun, readSpans, storedRuns, workFolders } from './soak-checks.js';

const SCALE = Number(process.env.SOAK_SCALE ?? '1');
const count = (n: number): number => Math.max(1, Math.round(n * SCALE));
const ONLY = new Set((process.env.SOAK_ONLY ?? 'kill,stop,cli,s3').split(','));
const DEADLINE = Date.now() + Number(process.env.SOAK_MAX_MIN ?? '45') * 60_000;
const LEASE_SEC = 3;
const FINAL_BOUND_MS = 90_000;

interface RunView {
  runName: string;
  status: string;
  reason: string | null;
  attempts: Array<{ agentId: string; attempt: number }>;
}

/** What one loop saw. */
interface Tally {
  loop: string;
  planned: number;
  iterations: number;
  runs: number;
  done: number;
  otherFinal: number;
  /** Runs that took more than one attempt. */
  retried: number;
  stuck: number;
  doubles: number;
  corrupt: number;
  leaked: number;
  seconds: number;
  notes: string[];
}

const say = (line: string): void => void process.stderr.write(`${line}\n`);
const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const FINAL = new Set(['done', 'failed', 'stopped']);

/** One soak environment: a home, a repo with the soak workflow, a markers dir, and the env the CLI gets. */
class Rig {
  readonly repo = makeRepo({ '.dstack/workflows.yaml': SOAK_WORKFLOWS });
  readonly markers = tempDir('soak-markers');
  constructor(
    readonly home: string,
    readonly env: Record<string, string> = {},
  ) {}

  cli(args: string[]): ReturnType<typeof dstack> {
    return dstack(args, { cwd: this.repo, home: this.home, env: { ...this.env, SOAK_MARKERS: this.markers }, timeoutMs: 120_000 });
  }

  /** `dstack run -d soak SECONDS`; the run name, or the error. */
  async submit(seconds: number): Promise<string> {
    const r = await this.cli(['run', '-d', 'soak', String(seconds)]);
    const name = /Run ([a-z]+-[a-z]+-\d+)/.exec(r.stdout)?.[1];
    if (r.code !== 0 || !name) throw new Error(`dstack run -d exited ${r.code}: ${r.stderr.trim()}`);
    return name;
  }

  /**
   * `dstack coordinator` for this rig, as a user runs it to replace lost agents (`ps` starts none):
   * every 2 s it starts an agent for queued jobs that no live agent can take.
   */
  startCoordinator(): void {
    this.coordinator = spawn(process.execPath, [CLI, 'coordinator', '--interval', '2'], {
      cwd: this.repo,
      env: { ...process.env, ...this.env, DSTACK_HOME: this.home, SOAK_MARKERS: this.markers },
      stdio: 'ignore',
    });
  }

  private coordinator: ReturnType<typeof spawn> | undefined;

  /** `dstack ps -a --json`; undefined while the CLI fails, as in an S3 outage. */
  async ps(): Promise<RunView[] | undefined> {
    const r = await this.cli(['ps', '-a', '--json']);
    if (r.code !== 0) return undefined;
    try {
      return JSON.parse(r.stdout) as RunView[];
    } catch {
      return undefined;
    }
  }

  async view(run: string): Promise<RunView | undefined> {
    return (await this.ps())?.find((v) => v.runName === run);
  }

  started(run: string): boolean {
    return readSpans(this.markers, run).length > 0;
  }

  /** The pid of the agent that holds the run's attempt: the busy one (one job runs at a time), else the one `ps` names. */
  async holder(run: string): Promise<number | undefined> {
    const busy = agents(this.home).filter((a) => a.state === 'busy' && alive(a.pid));
    if (busy.length === 1) return busy[0]?.pid;
    const id = (await this.view(run))?.attempts.at(-1)?.agentId;
    return agents(this.home).find((a) => a.id === id)?.pid;
  }

  /** Ends the agents this rig's CLIs started (by their registered pids) and removes its dirs. */
  async close(): Promise<void> {
    this.coordinator?.kill('SIGKILL');
    for (const a of agents(this.home)) if (alive(a.pid)) process.kill(a.pid, 'SIGKILL');
    removeAll(this.repo, this.markers, this.home);
  }
}

function newTally(loop: string, planned: number): Tally {
  return { loop, planned, iterations: 0, runs: 0, done: 0, otherFinal: 0, retried: 0, stuck: 0, doubles: 0, corrupt: 0, leaked: 0, seconds: 0, notes: [] };
}

/**
 * Follows one run to its end and checks it: a final status within the bound, its attempts' job
 * shells gone, no two attempts overlapping, and, when done, a whole download.
 */
async function settle(rig: Rig, run: string, t: Tally): Promise<void> {
  t.runs += 1;
  const deadline = Date.now() + FINAL_BOUND_MS;
  let view: RunView | undefined;
  while (Date.now() < deadline) {
    view = await rig.view(run);
    if (view && FINAL.has(view.status)) break;
    await pause(1000);
  }
  if (!view || !FINAL.has(view.status)) {
    t.stuck += 1;
    t.notes.push(`${run}: still ${view?.status ?? 'not listed by `dstack ps -a`'} after ${FINAL_BOUND_MS / 1000} s`);
  } else if (view.status === 'done') {
    t.done += 1;
    if (view.attempts.length > 1) t.retried += 1;
  } else {
    t.otherFinal += 1;
    t.notes.push(`${run}: ${view.status} (${view.reason ?? 'no reason'})`);
  }
  // A job shell that outlives its attempt could still write: wait for every one to be gone.
  const spans = readSpans(rig.markers, run);
  const strays = await waitFor(() => (spans.some((s) => alive(s.pid)) ? undefined : []), 30_000, 'job shells').catch(() => spans.filter((s) => alive(s.pid)));
  for (const s of strays) {
    t.notes.push(`${run}: job shell ${s.pid} still running 30 s after the run ended; killed`);
    process.kill(s.pid, 'SIGKILL');
  }
  const all = readSpans(rig.markers, run);
  if (all.filter((s) => s.ended).length > 1) t.notes.push(`${run}: ${all.filter((s) => s.ended).length} attempts ran to the end, one after another (killed before settling, then run again)`);
  const twice = doubleRun(all);
  if (twice) {
    t.doubles += 1;
    t.notes.push(`${run}: ran twice: ${twice}`);
  }
  if (view?.status === 'done') {
    const dir = tempDir('soak-download');
    try {
      const r = await rig.cli(['artifacts', 'download', run, '-o', dir]);
      const bad = r.code === 0 ? corruptDownload(dir) : `download exited ${r.code}: ${r.stderr.trim().split('\n')[0] ?? ''}`;
      if (bad) {
        t.corrupt += 1;
        t.notes.push(`${run}: download: ${bad}`);
      }
    } finally {
      removeAll(dir);
    }
  }
}

/** At the end of a loop: once every live agent is idle, the job folders left behind are leaks. */
async function countLeaks(rig: Rig, t: Tally): Promise<void> {
  await waitFor(() => (agents(rig.home).every((a) => !alive(a.pid) || a.state === 'idle') ? true : undefined), 60_000, 'idle agents').catch(() => {
    t.notes.push('agents still busy 60 s after the last run ended');
  });
  const left = workFolders(rig.home);
  t.leaked = left.length;
  if (left.length > 0) t.notes.push(`work folders left: ${left.slice(0, 3).join(', ')}${left.length > 3 ? ', …' : ''}`);
}

/** Runs `body` for each iteration until done or past the deadline; times the loop. */
async function loop(t: Tally, body: (i: number) => Promise<void>): Promise<void> {
  const t0 = Date.now();
  for (let i = 0; i < t.planned; i++) {
    if (Date.now() > DEADLINE) {
      t.notes.push(`cut short by SOAK_MAX_MIN after ${i} of ${t.planned}`);
      break;
    }
    t.iterations += 1;
    try {
      await body(i);
    } catch (e) {
      t.notes.push(`iteration ${i + 1}: ${(e as Error).message.split('\n')[0] ?? ''}`);
    }
    say(`${t.loop}: ${i + 1}/${t.planned} (done ${t.done}, stuck ${t.stuck}, double ${t.doubles}, corrupt ${t.corrupt})`);
  }
  t.seconds = Math.round((Date.now() - t0) / 1000);
}

// The jobs write their markers outside their folder, which the local sandbox (bwrap) would refuse.
const localHome = (): string => makeHome({ visibilityTimeoutSec: LEASE_SEC, stopGraceSec: 1, agentIdleTimeoutSec: 60, maxParallelJobs: 2, sandbox: 'off' });

async function agentKillLoop(n: number): Promise<Tally> {
  const t = newTally('kill -9 of the agent mid-job', n);
  const rig = new Rig(localHome());
  rig.startCoordinator();
  try {
    await loop(t, async () => {
      const run = await rig.submit(5);
      await waitFor(() => (rig.started(run) ? true : undefined), 60_000, `${run} to start`);
      const pid = await rig.holder(run);
      await pause(Math.random() * 2000);
      if (pid) process.kill(pid, 'SIGKILL');
      else t.notes.push(`${run}: no agent found to kill`);
      await settle(rig, run, t);
    });
    await countLeaks(rig, t);
  } finally {
    await rig.close();
  }
  return t;
}

async function sigstopLoop(n: number): Promise<Tally> {
  const t = newTally(`SIGSTOP of the agent for ${2 * LEASE_SEC + 1} s (lease ${LEASE_SEC} s)`, n);
  const rig = new Rig(localHome());
  // Two agents of our own, so that whichever holds the job, the other can take it while the holder is frozen.
  const spares: Array<ReturnType<typeof spawn>> = [];
  const ensureSpares = (): void => {
    for (let k = 0; k < 2; k++) {
      const a = spares[k];
      if (a && a.exitCode === null && a.signalCode === null) continue;
      spares[k] = spawn(process.execPath, [AGENT], { env: { ...process.env, DSTACK_HOME: rig.home, DSTACK_AGENT_ID: uniqueName('soak-agent') }, stdio: 'ignore' });
    }
  };
  try {
    await loop(t, async () => {
      ensureSpares();
      const run = await rig.submit(2 * LEASE_SEC + 6);
      await waitFor(() => (rig.started(run) ? true : undefined), 60_000, `${run} to start`);
      const pid = await rig.holder(run);
      await pause(500 + Math.random() * 1000);
      if (!pid) {
        t.notes.push(`${run}: no agent found to stop`);
      } else {
        process.kill(pid, 'SIGSTOP');
        await pause((2 * LEASE_SEC + 1) * 1000);
        process.kill(pid, 'SIGCONT');
      }
      await settle(rig, run, t);
    });
    await countLeaks(rig, t);
  } finally {
    for (const a of spares) if (a.exitCode === null && a.signalCode === null) a.kill('SIGKILL');
    await rig.close();
  }
  return t;
}

async function cliKillLoop(n: number): Promise<Tally> {
  const t = newTally('kill -9 of `dstack run -d` mid-submit', n);
  const rig = new Rig(localHome());
  try {
    // How long a whole submit takes here: kills land anywhere in it.
    const t0 = Date.now();
    const first = await rig.submit(1);
    const submitMs = Date.now() - t0;
    // That run is not one of the loop's: it is only watched so that it is not counted below.
    const seen = new Set([first]);
    await loop(t, async () => {
      const child = spawn(process.execPath, [CLI, 'run', '-d', 'soak', '1'], {
        cwd: rig.repo,
        env: { ...process.env, DSTACK_HOME: rig.home, SOAK_MARKERS: rig.markers },
        stdio: 'ignore',
      });
      const exited = new Promise((r) => child.once('close', r));
      await pause(Math.random() * submitMs * 1.2);
      child.kill('SIGKILL');
      await exited;
      const listed = ((await rig.ps()) ?? []).map((v) => v.runName);
      const runs = [...new Set([...listed, ...storedRuns(rig.home)])].filter((r) => !seen.has(r));
      for (const run of runs) {
        seen.add(run);
        await settle(rig, run, t);
      }
    });
    t.notes.unshift(`a whole submit took ${submitMs} ms; kills landed at random in 0–${Math.round(submitMs * 1.2)} ms`);
    await countLeaks(rig, t);
  } finally {
    await rig.close();
  }
  return t;
}

async function s3OutageLoop(n: number): Promise<Tally> {
  const t = newTally('S3 outage of 5 s mid-job (fauxqs behind the fault proxy)', n);
  const emulator = await startEmulator();
  const secretsManager = new SecretsManagerFake();
  const sm = await secretsManager.start();
  const proxy = new S3Proxy(emulator.endpoint);
  const s3 = await proxy.start();
  const home = tempDir('soak-aws');
  const env = { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1' };
  const rig = new Rig(home, env);
  try {
    const c = await rig.cli([
      'config', '--backend', 'aws', '--region', 'us-east-1', '--bucket', uniqueName('soak'), '--queue-prefix', uniqueName('soak'),
      '--sqs-endpoint', emulator.endpoint, '--s3-endpoint', s3, '--sts-endpoint', emulator.endpoint, '--secretsmanager-endpoint', sm, '--max-parallel-jobs', '2', '--agents', 'local',
    ]);
    if (c.code !== 0) throw new Error(`dstack config: ${c.stderr}`);
    // A lease longer than the outage: the job must ride it out.
    const file = join(home, 'config.yaml');
    writeFileSync(file, readFileSync(file, 'utf8').replace('local:\n', 'local:\n  visibilityTimeoutSec: 10\n  agentIdleTimeoutSec: 60\n  stopGraceSec: 1\n  sandbox: off\n'));
    await loop(t, async (i) => {
      const run = await rig.submit(8);
      await waitFor(() => (rig.started(run) ? true : undefined), 60_000, `${run} to start`);
      await pause(500 + Math.random() * 2000);
      const end = Date.now() + 5000;
      // Half the outages answer 500, half drop the connection.
      proxy.inject(i % 2 === 0 ? '500' : 'drop', 10_000, () => Date.now() < end);
      await pause(5000);
      await settle(rig, run, t);
    });
    t.notes.unshift(`S3 requests failed by the proxy: ${proxy.injected}`);
    await countLeaks(rig, t);
  } finally {
    await rig.close();
    await proxy.stop();
    await emulator.stop();
    await secretsManager.stop();
  }
  return t;
}

function table(tallies: Tally[]): string {
  const head = '| loop | iterations | runs | done | done after a retry | other final | lost or stuck | double runs | corrupt downloads | leaked work folders | time |';
  const rows = tallies.map(
    (t) => `| ${t.loop} | ${t.iterations} of ${t.planned} | ${t.runs} | ${t.done} | ${t.retried} | ${t.otherFinal} | ${t.stuck} | ${t.doubles} | ${t.corrupt} | ${t.leaked} | ${t.seconds} s |`,
  );
  const notes = tallies.flatMap((t) => t.notes.slice(0, 12).map((n) => `- ${t.loop}: ${n}`).concat(t.notes.length > 12 ? [`- ${t.loop}: … ${t.notes.length - 12} more`] : []));
  return [head, '|---|---|---|---|---|---|---|---|---|---|---|', ...rows, '', ...notes, ''].join('\n');
}

async function main(): Promise<number> {
  const loops: Array<[string, () => Promise<Tally>]> = [
    ['kill', () => agentKillLoop(count(50))],
    ['stop', () => sigstopLoop(count(10))],
    ['cli', () => cliKillLoop(count(20))],
    ['s3', () => s3OutageLoop(count(20))],
  ];
  const tallies: Tally[] = [];
  for (const [key, run] of loops) if (ONLY.has(key)) tallies.push(await run());
  process.stdout.write(`\nSoak at scale ${SCALE} (lease ${LEASE_SEC} s locally, 10 s on fauxqs; a run must end within ${FINAL_BOUND_MS / 1000} s):\n\n${table(tallies)}`);
  return tallies.some((t) => t.stuck + t.doubles + t.corrupt + t.leaked + t.otherFinal > 0) ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`soak: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 2;
  },
);
