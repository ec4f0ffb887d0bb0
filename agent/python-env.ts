import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lchown, mkdir, readFile, realpath, rename, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { basename, delimiter, join, resolve } from 'node:path';
import { JobFailedError, errnoCode, toError } from '../common/errors.js';
import { exec } from '../common/exec.js';
import { sha256 } from '../common/hash.js';
import type { JobSpec } from '../common/spec/job-spec.js';
import { endJobUserProcesses, giveBackTree, spawnIds, type JobUser } from './job-user.js';
import type { PreparedRun } from './providers.js';

/** Where a job's `requirements` are installed, and how the job's output hears about it. */
export interface RequirementsEnvOptions {
  /** The interpreter the job runs (as `findPython` found it): the venv's base. */
  interpreter: string;
  /** The requirements file as the workflow names it, relative to `cwd`. */
  requirements: string;
  /** The job's working directory: pip runs here, so relative paths in the file mean what they did. */
  cwd: string;
  /** The shared cache: `<venvRoot>/<key>` links to the venv for one interpreter and one file content. */
  venvRoot: string;
  /** For a venv that cannot be cached (the file points at other local files): made here, gone with the job. */
  jobDir: string;
  /** The job's environment (proxies, PIP_* settings) for venv and pip. */
  env: NodeJS.ProcessEnv;
  /** The job's stderr: what is being set up, and pip's own output. */
  say: (data: Buffer | string) => void;
  /** Aborted when the attempt must end at once: a running pip is killed. */
  signal?: AbortSignal;
  /** venv and pip run as this user, as the job does: a package's build code is the job's code. */
  user?: JobUser;
}

/** A virtual environment ready for the job: put `bin` first on PATH and `dir` in VIRTUAL_ENV. */
export interface RequirementsEnv {
  dir: string;
  bin: string;
}

/**
 * For a job with `requirements`: makes (or reuses) its venv and puts it first on the job's PATH, with
 * VIRTUAL_ENV set, so that `python`, `python3` and `pip` are the venv's. Without requirements, nothing changes.
 */
export async function useRequirementsEnv(
  spec: JobSpec,
  run: PreparedRun,
  o: Pick<RequirementsEnvOptions, 'venvRoot' | 'jobDir' | 'say' | 'signal' | 'user'>,
): Promise<void> {
  if (spec.requirements === undefined) return;
  if (run.interpreter === undefined) throw new JobFailedError('`requirements` needs Python, and this agent has no python3 on PATH: install it');
  const venv = await requirementsEnv({ ...o, interpreter: run.interpreter, requirements: spec.requirements, cwd: run.cwd, env: run.env });
  run.env.PATH = [venv.bin, run.env.PATH ?? ''].join(delimiter);
  run.env.VIRTUAL_ENV = venv.dir;
}

/** Written into a venv when it is complete; a venv without it is never used. */
export const VENV_MARKER = 'dstack-venv.json';

/**
 * Gives the job a virtual environment of its interpreter with `requirements` installed, so that pip
 * never writes into the machine's own Python (Debian's refuses it anyway, PEP 668). Venvs are cached
 * per interpreter (path and exact version) and per sha256 of the file's content: a second job with
 * the same requirements reuses the venv without running pip. A venv is built under a name of its
 * own, at the path it keeps (venvs are not relocatable: pip writes its path into scripts), and then
 * published by creating the `<key>` link, which is atomic: when two agents build the same venv at
 * once, the first link wins and the other agent uses that venv and removes its own.
 */
export async function requirementsEnv(o: RequirementsEnvOptions): Promise<RequirementsEnv> {
  const file = resolve(o.cwd, o.requirements);
  let content: Buffer;
  try {
    content = await readFile(file);
  } catch {
    throw new JobFailedError(`requirements file \`${o.requirements}\` does not exist in the repo: add it or fix \`requirements\``);
  }
  const version = await exec(o.interpreter, ['-c', 'import sys; print(sys.version)'], { env: o.env }).catch(() => undefined);
  if (!version || version.code !== 0) throw new JobFailedError(`could not run ${o.interpreter} to make a virtual environment for \`${o.requirements}\``);
  const pythonVersion = version.stdout.toString().trim();
  const shortVersion = pythonVersion.split(' ')[0] ?? pythonVersion;

  if (refersToOtherFiles(content.toString('utf8'))) {
    // The content hash would not see a change in the files it points at: a venv for this job only.
    o.say(`dstack: installing ${o.requirements} into a virtual environment for this job (it names other local files, so it is not cached)\n`);
    const dir = join(o.jobDir, 'venv');
    await build(o, file, dir);
    return { dir, bin: join(dir, 'bin') };
  }

  const key = sha256(JSON.stringify([o.interpreter, pythonVersion, sha256(content)])).slice(0, 32);
  const link = join(o.venvRoot, key);
  const cached = await readyVenv(link);
  if (cached) {
    o.say(`dstack: reusing the virtual environment for ${o.requirements} (Python ${shortVersion})\n`);
    return { dir: cached, bin: join(cached, 'bin') };
  }
  await mkdir(o.venvRoot, { recursive: true });
  const dir = join(o.venvRoot, `${key}-${randomBytes(4).toString('hex')}`);
  o.say(`dstack: installing ${o.requirements} into a new virtual environment (Python ${shortVersion})\n`);
  try {
    await build(o, file, dir);
    if (o.user) {
      // Built by the job user, used by later jobs: nothing the build left running may change it
      // after this, and it becomes root's, read-only to every job, before it is published.
      await endJobUserProcesses(o.user);
      await giveBackTree(dir, o.user);
    }
    await writeFile(
      join(dir, VENV_MARKER),
      `${JSON.stringify({ interpreter: o.interpreter, pythonVersion, requirementsSha256: sha256(content), createdAt: new Date().toISOString() })}\n`,
      // A new file only: in a venv the job user built, a link planted here must not make root write elsewhere.
      { flag: 'wx' },
    );
    await publish(dir, link);
  } catch (e) {
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  }
  const ready = await readyVenv(link);
  if (!ready) throw new JobFailedError(`the virtual environment for \`${o.requirements}\` vanished while it was being set up: run the job again`);
  if (ready !== dir) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  return { dir: ready, bin: join(ready, 'bin') };
}

/** The venv a cache link leads to, if it is complete. */
async function readyVenv(link: string): Promise<string | undefined> {
  try {
    const dir = await realpath(link);
    await stat(join(dir, VENV_MARKER));
    return dir;
  } catch {
    return undefined;
  }
}

/** Links `<key>` to the venv: a link already there wins, unless its venv is gone (then it is replaced). */
async function publish(dir: string, link: string): Promise<void> {
  try {
    await symlink(basename(dir), link);
  } catch (e) {
    if (errnoCode(e) !== 'EEXIST') throw e;
    if (await readyVenv(link)) return;
    // A link to a venv that is no more: replaced in one rename, so no reader sees it missing.
    const fresh = `${dir}.link`;
    await symlink(basename(dir), fresh);
    await rename(fresh, link).catch(async (err: unknown) => {
      await unlink(fresh).catch(() => undefined);
      throw err;
    });
  }
}

/** `python -m venv DIR`, then `DIR/bin/python -m pip install -r FILE` in the job's directory. */
async function build(o: RequirementsEnvOptions, file: string, dir: string): Promise<void> {
  if (o.user) {
    // Made here, for the job user to fill: the user cannot write in the cache's folder.
    await mkdir(dir);
    await lchown(dir, o.user.uid, o.user.gid);
  }
  // The machine's packages stay visible under the venv's, as they were when pip installed into the
  // machine's Python (an image's preinstalled torch, say); only what the file asks for goes in the venv.
  const venv = await run(o.interpreter, ['-m', 'venv', '--system-site-packages', dir], o);
  if (venv !== 0) {
    throw new JobFailedError(
      `\`${o.interpreter} -m venv\` failed (exit ${venv}): install the venv module for it (Debian: apt-get install python3-venv) to use \`requirements\``,
    );
  }
  const pip = await run(join(dir, 'bin', 'python'), ['-m', 'pip', 'install', '--disable-pip-version-check', '-r', file], o);
  if (pip !== 0) throw new JobFailedError(`\`pip install -r ${o.requirements}\` exited with code ${pip}: see its output above`);
}

/** Runs a setup command with its output going to the job's stderr; its exit code. */
function run(cmd: string, args: string[], o: RequirementsEnvOptions): Promise<number> {
  return new Promise((resolveRun, reject) => {
    // PYTHONHOME would point the venv's python at another installation; VIRTUAL_ENV is set by us. A
    // pip config with `user = true` would install into ~/.local, which this venv sees: not there.
    const env: NodeJS.ProcessEnv = { ...o.env, PIP_REQUIRE_VIRTUALENV: '1', PIP_USER: '0' };
    delete env.PYTHONHOME;
    delete env.VIRTUAL_ENV;
    const child = spawn(cmd, args, {
      cwd: o.cwd,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      shell: false,
      ...spawnIds(o.user),
      ...(o.signal ? { signal: o.signal, killSignal: 'SIGKILL' as const } : {}),
    });
    child.stdout.on('data', (d: Buffer) => o.say(d));
    child.stderr.on('data', (d: Buffer) => o.say(d));
    child.on('error', (e) => reject(o.signal?.aborted ? o.signal.reason : toError(e)));
    child.on('close', (code, signal) => (o.signal?.aborted ? reject(o.signal.reason) : resolveRun(code ?? (signal ? 128 : 1))));
  });
}

/** Whether a requirements file reads other local files (`-r`, `-c`, `-e`, paths), whose changes its own hash would miss. */
export function refersToOtherFiles(text: string): boolean {
  return text.split(/\r?\n/).some((raw) => {
    const line = raw.replace(/(^|\s)#.*$/, '').trim();
    return /^(-r|--requirement|-c|--constraint|-e|--editable)\b/.test(line) || /^(\.|\/|~)/.test(line) || /\bfile:/.test(line);
  });
}
