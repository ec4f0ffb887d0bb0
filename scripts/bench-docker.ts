// The docker provider's overhead: attached `dstack run` of a docker workflow (`echo hi` in the busybox
// test image from the local registry) on an idle local agent, until the run is done, beside `docker run
// --rm` of the same image and command against the same daemon, in the same run. The daemon and registry
// are the tests' (test/support/docker.ts): .ci/run's when DSTACK_TEST_DOCKER_HOST is set, else a
// private pair started here and stopped when the bench exits.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { killAgents } from '../test/support/cli.js';
import { DockerUnavailable, openDocker } from '../test/support/docker.js';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'dist', 'coordinator', 'main.js');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

/** ms that `cmd args` took; throws with its stderr when it fails or its stdout lacks `expect`. */
function timed(cmd: string, args: string[], o: { cwd?: string; env: NodeJS.ProcessEnv; expect?: string }): number {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { cwd: o.cwd, env: o.env, encoding: 'utf8', timeout: 120_000 });
  const ms = performance.now() - t0;
  if (r.status !== 0 || (o.expect !== undefined && !r.stdout.includes(o.expect))) {
    throw new Error(`bench: ${cmd === process.execPath ? 'dstack' : cmd} ${args.slice(cmd === process.execPath ? 1 : 0).join(' ')} exited ${String(r.status)}: ${r.stderr.trim() || r.stdout.trim()}`);
  }
  return ms;
}

/**
 * Three rows, medians of `reps`: attached `dstack run` of a docker workflow beside `docker run --rm`,
 * beside `docker pull` + `docker run --rm`, and beside the same command as a bash workflow.
 */
export async function benchDocker(dir: string, reps: number): Promise<string[]> {
  let d;
  try {
    d = await openDocker();
  } catch (e) {
    if (e instanceof DockerUnavailable) return [`| docker provider overhead: not measured (${e.reason}) | | | | |`];
    throw e;
  }
  const home = join(dir, 'home');
  const repo = join(dir, 'repo');
  mkdirSync(home, { recursive: true });
  mkdirSync(join(repo, '.dstack'), { recursive: true });
  writeFileSync(join(home, 'config.yaml'), 'backend: local\nlocal:\n  agentIdleTimeoutSec: 300\n  maxParallelJobs: 1\n  stopGraceSec: 1\n');
  // The workflow in the shape of 0.0.14's docs.
  writeFileSync(
    join(repo, '.dstack', 'workflows.yaml'),
    `workflows:\n  - name: hi\n    provider: docker\n    image: ${d.image}\n    commands:\n      - echo hi\n  - name: hi-bash\n    provider: bash\n    commands:\n      - echo hi\n`,
  );
  const git = (...args: string[]): void => void execFileSync('git', args, { cwd: repo, stdio: 'ignore' });
  git('init', '-q');
  git('add', '-A');
  git('-c', 'user.name=b', '-c', 'user.email=b@b', 'commit', '-qm', 'bench');
  // The agents the CLI starts inherit DOCKER_HOST, as a user's would.
  const env = { ...process.env, DSTACK_HOME: home, ...d.env() };
  const dstack = (...args: string[]): number => timed(process.execPath, [CLI, ...args], { cwd: repo, env, expect: 'hi' });
  const docker = (...args: string[]): number => timed('docker', args, { env, expect: args[0] === 'run' ? 'hi' : undefined });
  try {
    // An idle agent, and the image in the daemon already: the first docker run is not counted either.
    dstack('run', 'hi-bash');
    dstack('run', 'hi');
    docker('run', '--rm', d.image, 'sh', '-c', 'echo hi');
    const viaDstack: number[] = [];
    const run: number[] = [];
    const pullRun: number[] = [];
    const onHost: number[] = [];
    for (let i = 0; i < reps; i++) {
      run.push(docker('run', '--rm', d.image, 'sh', '-c', 'echo hi'));
      pullRun.push(docker('pull', '-q', d.image) + docker('run', '--rm', d.image, 'sh', '-c', 'echo hi'));
      viaDstack.push(dstack('run', 'hi'));
      onHost.push(dstack('run', 'hi-bash'));
    }
    const v = median(viaDstack);
    const r = median(run);
    const p = median(pullRun);
    const h = median(onHost);
    const figure = `docker provider: attached \`dstack run\` of \`echo hi\` in busybox from the local registry, idle local agent, until done (median of ${reps})`;
    return [
      `| ${figure} | ${v.toFixed(0)} ms | \`docker run --rm\` of the same image and command | ${r.toFixed(0)} ms | +${(v - r).toFixed(0)} ms (${(v / r).toFixed(1)}x) |`,
      `| ${figure} | ${v.toFixed(0)} ms | \`docker pull\` + \`docker run --rm\` (the agent pulls for each job) | ${p.toFixed(0)} ms | +${(v - p).toFixed(0)} ms (${(v / p).toFixed(1)}x) |`,
      `| ${figure} | ${v.toFixed(0)} ms | the same \`echo hi\` as a bash workflow (no container), same agent | ${h.toFixed(0)} ms | +${(v - h).toFixed(0)} ms (${(v / h).toFixed(1)}x) |`,
    ];
  } finally {
    await killAgents(home);
  }
}
