// Time to link: `dstack run WORKFLOW -d` of a dev environment on an idle local agent, until it
// prints the link (the agent's probe and the CLI's GET through the link both answered 200), beside
// starting the same server by hand in the same run and polling it until it answers 200.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../agent/providers.js';
import { httpGetFollowing } from '../coordinator/links.js';
import { findTool } from '../test/support/tools.js';
import { killAgents } from '../test/support/cli.js';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'dist', 'coordinator', 'main.js');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}


/** Starts the server as a user would by hand and polls `url` every 20 ms until it answers 200: ms from spawn. */
async function byHand(cmd: string, args: string[], url: string, env: NodeJS.ProcessEnv, cwd: string): Promise<number> {
  const t0 = performance.now();
  const child = spawn(cmd, args, { cwd, env, stdio: 'ignore', detached: true });
  try {
    for (;;) {
      if ((await httpGetFollowing(url, 1000)) === 200) return performance.now() - t0;
      if (performance.now() - t0 > 60_000) throw new Error(`bench: ${cmd} did not answer in 60 s`);
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    try {
      process.kill(-(child.pid ?? 0), 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
}

/** Rows for `notebook` and `code`, each a median of `reps`; a server that is not installed is named and skipped. */
export async function benchDev(dir: string, reps: number): Promise<string[]> {
  const rows: string[] = [];
  const home = join(dir, 'home');
  const repo = join(dir, 'repo');
  mkdirSync(home, { recursive: true });
  mkdirSync(join(repo, '.dstack'), { recursive: true });
  // As the tests find it: DSTACK_TEST_CODE_SERVER, PATH, or the CI cache of .ci/run.
  const codeServer = findTool('code-server');
  const notebook = findTool('jupyter-notebook');
  writeFileSync(
    join(home, 'config.yaml'),
    `backend: local\nlocal:\n  agentIdleTimeoutSec: 300\n  maxParallelJobs: 1\n  stopGraceSec: 1\n${codeServer ? `  codeServer: ${codeServer}\n` : ''}`,
  );
  writeFileSync(join(repo, '.dstack', 'workflows.yaml'), 'workflows:\n  - name: nb\n    provider: notebook\n  - name: code\n    provider: code\n  - name: warm\n    provider: bash\n    commands: [echo warm]\n');
  writeFileSync(join(repo, 'train.py'), 'print(1)\n');
  const git = (...args: string[]): void => void execFileSync('git', args, { cwd: repo, stdio: 'ignore' });
  git('init', '-q');
  git('add', '-A');
  git('-c', 'user.name=b', '-c', 'user.email=b@b', 'commit', '-qm', 'bench');
  const env = { ...process.env, DSTACK_HOME: home };
  const dstack = (...args: string[]): { ms: number; out: string } => {
    const t0 = performance.now();
    const r = spawnSync(process.execPath, [CLI, ...args], { cwd: repo, env, encoding: 'utf8', timeout: 120_000 });
    if (r.status !== 0) throw new Error(`bench: dstack ${args.join(' ')} exited ${String(r.status)}: ${r.stderr}`);
    return { ms: performance.now() - t0, out: r.stdout };
  };
  // An idle agent: started by a first run, waiting for the next job.
  dstack('run', 'warm');
  try {
    return await measure();
  } finally {
    await killAgents(home);
  }

  async function measure(): Promise<string[]> {
  const cases: Array<{ workflow: string; name: string; binary: string | undefined; hand: (port: number, dir: string) => [string, string[], string, NodeJS.ProcessEnv] }> = [
    {
      workflow: 'nb',
      name: 'notebook',
      binary: notebook,
      hand: (port, d) => [notebook ?? '', ['--no-browser', '--ip=127.0.0.1', `--port=${port}`, '--allow-root', `--NotebookApp.notebook_dir=${repo}`], `http://127.0.0.1:${port}/tree?token=t0123456789abcdef`, { ...process.env, JUPYTER_TOKEN: 't0123456789abcdef', JUPYTER_RUNTIME_DIR: join(d, 'rt') }],
    },
    {
      workflow: 'code',
      name: 'code',
      binary: codeServer,
      hand: (port, d) => [codeServer ?? '', ['--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, '--disable-telemetry', '--disable-update-check', '--user-data-dir', join(d, 'data'), '--extensions-dir', join(d, 'ext'), repo], `http://127.0.0.1:${port}/`, process.env],
    },
  ];
  for (const c of cases) {
    if (!c.binary) {
      rows.push(`| time to link, \`${c.name}\`: not measured (${c.name === 'code' ? 'code-server' : 'jupyter-notebook'} is not installed) | | | | |`);
      continue;
    }
    const viaDstack: number[] = [];
    const hand: number[] = [];
    for (let i = 0; i < reps; i++) {
      const r = dstack('run', c.workflow, '-d');
      if (!/is ready: http/.test(r.out)) throw new Error(`bench: no link in ${r.out}`);
      viaDstack.push(r.ms);
      const run = /of run (\S+) is ready/.exec(r.out)?.[1] ?? '';
      dstack('stop', '-y', run);
      const d = join(dir, `hand-${c.name}-${i}`);
      mkdirSync(d, { recursive: true });
      const [cmd, args, url, henv] = c.hand(await freePort(), d);
      hand.push(await byHand(cmd, args, url, henv, repo));
      rmSync(d, { recursive: true, force: true });
    }
    const v = median(viaDstack);
    const h = median(hand);
    rows.push(
      `| time to link, \`${c.name}\` (\`dstack run -d\` on an idle local agent until it prints the link; median of ${reps}; goal 5 s) | ${v.toFixed(0)} ms | the same server started by hand, polled until it answers 200 | ${h.toFixed(0)} ms | +${(v - h).toFixed(0)} ms (${(v / h).toFixed(1)}x) |`,
    );
  }
  return rows;
}
}
