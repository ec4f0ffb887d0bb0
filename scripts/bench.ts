// npm run bench: each figure beside a baseline measured in the same run, on this machine.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../common/config.js';
import { openBackend } from '../common/backend.js';
import { parseLogChunk } from '../common/log-records.js';
import { FinalRecordSchema } from '../common/records/runs.js';
import { createRun, readJson, runKeys } from '../common/runs.js';
import type { JobSpec } from '../common/spec/job-spec.js';
import { benchArtifacts } from './bench-artifacts.js';
import { benchAws } from './bench-aws.js';
import { benchFleet } from './bench-fleet.js';
import { benchDev } from './bench-dev.js';
import { benchDocker } from './bench-docker.js';
import { benchRss } from './bench-rss.js';

/** Ends the run early when BENCH_ONLY picks one section. */
class Skip extends Error {}

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'dist', 'coordinator', 'main.js');
const N = Number(process.env.BENCH_N ?? 15);

function timeMs(fn: () => void): number {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

function row(name: string, value: number, baselineName: string, baseline: number): string {
  return `| ${name} | ${value.toFixed(0)} ms | ${baselineName} | ${baseline.toFixed(0)} ms | +${(value - baseline).toFixed(0)} ms (${(value / baseline).toFixed(1)}x) |`;
}

const work = mkdtempSync(join(tmpdir(), 'dstack-bench-'));
const home = join(work, 'home');
const repo = join(work, 'repo');
mkdirSync(home);
mkdirSync(join(repo, '.dstack'), { recursive: true });
writeFileSync(join(home, 'config.yaml'), 'backend: local\nlocal:\n  agentIdleTimeoutSec: 120\n  maxParallelJobs: 1\n');
writeFileSync(join(repo, '.dstack', 'workflows.yaml'), 'workflows:\n  - name: hello\n    provider: bash\n    commands:\n      - echo "Hello, world!"\n');
const git = (...args: string[]): void => void execFileSync('git', args, { cwd: repo, stdio: 'ignore' });
git('init', '-q');
git('add', '-A');
git('-c', 'user.name=b', '-c', 'user.email=b@b', 'commit', '-qm', 'bench');
const env = { ...process.env, DSTACK_HOME: home };
const results: string[] = [];
const only = process.env.BENCH_ONLY;

try {
  if (only === undefined || only === 'artifacts') results.push(...(await benchArtifacts(join(work, 'artifacts'))));
  if (only === 'artifacts') throw new Skip();
  if (only === undefined || only === 'aws') results.push(...(await benchAws(join(work, 'aws'))));
  if (only === 'aws') throw new Skip();
  if (only === undefined || only === 'fleet') results.push(...(await benchFleet(join(work, 'fleet'), Number(process.env.BENCH_FLEET_N ?? 5))));
  if (only === 'fleet') throw new Skip();
  if (only === undefined || only === 'dev') results.push(...(await benchDev(join(work, 'dev'), Number(process.env.BENCH_DEV_N ?? 5))));
  if (only === 'dev') throw new Skip();
  if (only === undefined || only === 'docker') results.push(...(await benchDocker(join(work, 'docker'), Number(process.env.BENCH_DOCKER_N ?? 5))));
  if (only === 'docker') throw new Skip();
  if (only === undefined || only === 'rss') results.push(...(await benchRss(join(work, 'rss'))));
  if (only === 'rss') throw new Skip();
  // 1. CLI cold start.
  const cli: number[] = [];
  const node: number[] = [];
  for (let i = 0; i < N; i++) {
    node.push(timeMs(() => spawnSync(process.execPath, ['-e', ''])));
    cli.push(timeMs(() => spawnSync(process.execPath, [CLI, '--help'], { env })));
  }
  results.push(row('CLI cold start (`dstack --help`)', median(cli), "`node -e ''`", median(node)));

  // 2. Attached one-line run on an idle agent (the first run starts the agent; it is not counted).
  spawnSync(process.execPath, [CLI, 'run', 'hello'], { cwd: repo, env });
  const runs: number[] = [];
  const bash: number[] = [];
  for (let i = 0; i < N; i++) {
    bash.push(timeMs(() => spawnSync('bash', ['-c', 'echo "Hello, world!"'])));
    runs.push(
      timeMs(() => {
        const r = spawnSync(process.execPath, [CLI, 'run', 'hello'], { cwd: repo, env });
        if (r.status !== 0 || !r.stdout.toString().includes('Hello, world!')) throw new Error(`run failed: ${r.stderr.toString()}`);
      }),
    );
  }
  results.push(row('attached `dstack run hello` (one echo), idle agent', median(runs), '`bash -c` of the same line', median(bash)));

  // 3. Enqueue to job start on an idle agent: the job prints its start time (ms since epoch).
  const config = await loadConfig(home);
  const backend = await openBackend(config);
  const base = JSON.parse(execFileSync(process.execPath, [CLI, 'run', 'hello', '--dry-run'], { cwd: repo, env }).toString()) as JobSpec;
  const starts: number[] = [];
  const spawns: number[] = [];
  for (let i = 0; i < N; i++) {
    const t0 = Date.now();
    const child = spawn('bash', ['-c', 'date +%s%3N'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let printed = '';
    child.stdout.on('data', (d: Buffer) => (printed += d.toString()));
    await new Promise((r) => child.on('close', r));
    spawns.push(Number(printed.trim()) - t0);

    await new Promise((r) => setTimeout(r, 300));
    const record = await createRun(backend.store, (runName) => ({
      runName,
      repoId: base.repoId,
      workflow: 'hello',
      jobId: `bench${i}`,
      submittedAt: new Date().toISOString(),
      maxAttempts: 3,
      spec: { ...base, runName, jobId: `bench${i}`, commands: ['date +%s%3N'] },
      overrides: [],
      toolVersion: 'bench',
    }));
    const sent = Date.now();
    await backend.queue.send(JSON.stringify(record.spec));
    for (;;) {
      if (await readJson(backend.store, runKeys.final(base.repoId, record.runName), FinalRecordSchema)) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const chunks = await backend.store.list(runKeys.logs(base.repoId, record.runName));
    const first = parseLogChunk((await backend.store.get(chunks[0]?.key ?? '')) ?? Buffer.alloc(0)).records[0];
    starts.push(Number(first?.d.toString().trim()) - sent);
  }
  results.push(row('enqueue → job running, idle agent', median(starts), 'spawn → running of `bash -c`', median(spawns)));
} catch (e) {
  if (!(e instanceof Skip)) throw e;
} finally {
  const agentsDir = join(home, 'local', 'agents');
  for (const name of existsSync(agentsDir) ? readdirSync(agentsDir).filter((n) => n.endsWith('.json')) : []) {
    try {
      process.kill((JSON.parse(readFileSync(join(agentsDir, name), 'utf8')) as { pid: number }).pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
  rmSync(work, { recursive: true, force: true });
}


process.stdout.write(`\nCLI figures are medians of ${N} runs; artifact figures are single runs.\n\n| figure | value | baseline | value | ratio |\n|---|---|---|---|---|\n${results.join('\n')}\n`);
