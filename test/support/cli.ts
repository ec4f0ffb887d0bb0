import { spawn, execFileSync, type ChildProcessByStdio } from 'node:child_process';
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = join(ROOT, 'dist', 'coordinator', 'main.js');
export const AGENT = join(ROOT, 'dist', 'agent', 'main.js');
export const CORPUS = join(ROOT, '..', 'shared', 'corpus', 'workflows');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A temp dir removed by `cleanup()`. */
export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `dstack-${prefix}-`));
}

/** Makes a git repo with the given files (path → content) and one commit, unless `commit` is false. */
export function makeRepo(files: Record<string, string>, options: { commit?: boolean } = {}): string {
  const dir = tempDir('repo');
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  const git = (...args: string[]): void => void execFileSync('git', args, { cwd: dir, stdio: 'ignore' });
  git('init', '-q', '-b', 'main');
  git('config', 'user.email', 'test@example.com');
  git('config', 'user.name', 'Test');
  if (options.commit ?? true) {
    git('add', '-A');
    git('commit', '-q', '-m', 'initial');
  }
  return dir;
}

/** A dstack home with a config tuned for fast tests. */
export function makeHome(config: Record<string, unknown> = {}): string {
  const home = tempDir('home');
  const local = { agentIdleTimeoutSec: 20, visibilityTimeoutSec: 30, stopGraceSec: 2, ...config };
  writeFileSync(join(home, 'config.yaml'), `backend: local\nlocal:\n${Object.entries(local).map(([k, v]) => `  ${k}: ${String(v)}`).join('\n')}\n`);
  return home;
}

/** A running CLI: the child, its output so far (filled in as it comes) and its exit code once it has closed (-1 after a signal). */
export interface SpawnedCli {
  child: ChildProcessByStdio<null, Readable, Readable>;
  out: { stdout: string; stderr: string };
  exited: Promise<number>;
}

/** Starts the built CLI against a dstack home and collects its stdout and stderr as they come. */
export function spawnCli(args: string[], o: { cwd: string; home: string; env?: Record<string, string> }): SpawnedCli {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: o.cwd,
    env: { ...process.env, DSTACK_HOME: o.home, ...o.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (d: Buffer) => (out.stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out.stderr += d.toString()));
  const exited = new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve(code ?? -1));
  });
  return { child, out, exited };
}

/** Runs the built CLI to its end (SIGKILL after `timeoutMs`, default 60 s) and returns its exit code and output. */
export async function dstack(args: string[], o: { cwd: string; home: string; env?: Record<string, string>; timeoutMs?: number }): Promise<CliResult> {
  const { child, out, exited } = spawnCli(args, o);
  const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000);
  try {
    const code = await exited;
    return { code, stdout: out.stdout, stderr: out.stderr };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Registers mocha hooks that make a git repo holding `.dstack/workflows.yaml` and a dstack home
 * (`makeHome(homeConfig)`) before the suite, or before each test with `each`, and after it kill the
 * home's agents and remove both. Read `repo` and `home` inside hooks and tests, not at suite level.
 */
export function withRepoAndHome(workflowsYaml: string, homeConfig: Record<string, unknown> = {}, o: { each?: boolean } = {}): { readonly repo: string; readonly home: string } {
  let repo = '';
  let home = '';
  (o.each ? beforeEach : before)(() => {
    repo = makeRepo({ '.dstack/workflows.yaml': workflowsYaml });
    home = makeHome(homeConfig);
  });
  (o.each ? afterEach : after)(async () => {
    await killAgents(home);
    removeAll(repo, home);
  });
  return {
    get repo() {
      return repo;
    },
    get home() {
      return home;
    },
  };
}

/** Pids of the local agents registered under a dstack home. */
export function agentPids(home: string): number[] {
  const dir = join(home, 'local', 'agents');
  let names: string[] = [];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json'));
  } catch {
    return [];
  }
  return names.flatMap((n) => {
    try {
      return [(JSON.parse(readFileSync(join(dir, n), 'utf8')) as { pid: number }).pid];
    } catch {
      return [];
    }
  });
}

/** Kills every agent of a home (and their job groups die with them through the watchdog). */
export async function killAgents(home: string): Promise<void> {
  for (const pid of agentPids(home)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  await new Promise((r) => setTimeout(r, 100));
}

export function removeAll(...dirs: string[]): void {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

export async function waitFor<T>(fn: () => T | undefined | Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every file under `dir` whose bytes hold `value`, as paths relative to it: where a secret went. */
export function filesHolding(dir: string, value: string): string[] {
  const found: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && readFileSync(p).includes(value)) found.push(relative(dir, p));
    }
  };
  walk(dir);
  return found;
}
