import { constants } from 'node:fs';
import { access, lstat, mkdir, realpath } from 'node:fs/promises';
import { exec } from '../common/exec.js';
import type { SANDBOX_MODES } from '../common/config.js';
import type { JobSpec } from '../common/spec/job-spec.js';
import { absoluteArtifactPaths } from './artifacts.js';
import { spawnIds, type JobUser } from './job-user.js';

/** `local.sandbox`: `auto` runs local jobs under bubblewrap when it works on this machine; `off` never. */
export type SandboxMode = (typeof SANDBOX_MODES)[number];

/** What the agent's sandbox hides and keeps read-only, for every job; decided once, at agent start. */
export interface Sandbox {
  /** The bwrap binary. */
  bwrap: string;
  /** Hidden under an empty tmpfs (folders) or /dev/null (files): ~/.aws, ~/.ssh, DSTACK_HOME, the agents' work folders. */
  hidden: string[];
  /** Shown again, read-only, inside what is hidden: the venv cache. */
  readOnly: string[];
}

/** A command line that runs `bash SCRIPT` in the job's sandbox. */
export interface SandboxedCommand {
  command: string;
  args: string[];
}

/**
 * The sandbox this agent can use: with `auto`, bwrap on PATH that starts (user namespaces may be
 * off), and an `env` that can ignore SIGTERM (coreutils 8.31+); `undefined` when off or unavailable.
 * With a job user, bwrap is tried as that user, as jobs will run it (it then needs user namespaces).
 */
export async function detectSandbox(mode: SandboxMode, path: string, o: Omit<Sandbox, 'bwrap'>, user?: JobUser): Promise<Sandbox | undefined> {
  if (mode === 'off') return undefined;
  for (const dir of path.split(':').filter((d) => d.length > 0)) {
    const bwrap = `${dir}/bwrap`;
    if (!(await access(bwrap, constants.X_OK).then(() => true, () => false))) continue;
    const probe = await exec('env', ['--ignore-signal=TERM', bwrap, '--ro-bind', '/', '/', '--dev', '/dev', '--proc', '/proc', '--die-with-parent', '--', 'true'], {
      cwd: '/',
      ...spawnIds(user),
    }).catch(() => undefined);
    if (probe?.code === 0) return { bwrap, ...o };
  }
  return undefined;
}

/**
 * The paths that `user` can reach (stat), asked of a shell running with that user's ids, as bwrap and
 * the job will run: one process for all of them.
 */
async function reachableBy(user: JobUser, paths: string[]): Promise<Set<string>> {
  if (paths.length === 0) return new Set();
  const r = await exec('bash', ['-c', 'for p; do [ -e "$p" ] || [ -L "$p" ] && printf "%s\\0" "$p"; done; true', 'reachable', ...paths], { cwd: '/', env: { PATH: '/usr/bin:/bin' }, ...spawnIds(user) });
  if (r.code !== 0) throw new Error(`could not check what the job user ${user.name} can reach: ${r.stderr.trim()}`);
  return new Set(r.stdout.toString('utf8').split('\0').filter((p) => p.length > 0));
}

/**
 * `bash SCRIPT` under bwrap: the host read-only, its own /dev, /proc and /tmp, the hidden paths
 * hidden, and the job's folder and its absolute artifact paths writable (created when missing, if
 * the agent can). The network is shared. bwrap ignores SIGTERM (through `env`), so a SIGTERM to the
 * job's group reaches only the job, which may trap it and exit in its own time; the job starts with
 * SIGTERM's default action again. bwrap exits with the job's code, and dies with the agent.
 */
export async function sandboxed(s: Sandbox, script: string, jobDir: string, spec: Pick<JobSpec, 'artifacts' | 'pinnedDeps'>, user?: JobUser): Promise<SandboxedCommand> {
  const args = ['--ignore-signal=TERM', s.bwrap, '--die-with-parent', '--ro-bind', '/', '/', '--dev', '/dev', '--proc', '/proc', '--tmpfs', '/tmp'];
  const hidden = (await Promise.all(s.hidden.map((path) => realpath(path).catch(() => undefined)))).filter((p): p is string => p !== undefined);
  // A job user cannot reach some of them at all (/root/.ssh in a 0700 /root): there is nothing to
  // hide from it there, and bwrap, running as that user, could not mount over them.
  const reachable = user ? await reachableBy(user, hidden) : new Set(hidden);
  for (const real of hidden) {
    if (!reachable.has(real)) continue;
    args.push(...((await lstat(real)).isDirectory() ? ['--tmpfs', real] : ['--ro-bind', '/dev/null', real]));
  }
  for (const path of s.readOnly) {
    const real = await realpath(path).catch(() => undefined);
    if (real !== undefined) args.push('--ro-bind', real, real);
  }
  const writable = [jobDir];
  // A declared absolute artifact (a conda env, say) is the job's to write, and a dep's absolute
  // artifact was restored at its path for the job to use, as they are without the sandbox.
  // With a job user, the attempt made them already, for that user (attempt.ts).
  for (const path of absoluteArtifactPaths(spec)) {
    await mkdir(path, { recursive: true }).catch(() => undefined);
    writable.push(path);
  }
  for (const path of writable) {
    const real = await realpath(path).catch(() => undefined);
    if (real !== undefined) args.push('--bind', real, real);
  }
  const realScript = await realpath(script);
  return { command: 'env', args: [...args, '--', 'env', '--default-signal=TERM', 'bash', realScript] };
}
