import { spawn } from 'node:child_process';
import { access, constants, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { delimiter, isAbsolute, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import lockfile from 'proper-lockfile';
import { JobFailedError, errnoCode, toError } from '../common/errors.js';
import { exec, onPath } from '../common/exec.js';

/** Where the agent image keeps one Conda env per Python version (ami/install-conda.sh: py3.7 … py3.11). */
export const IMAGE_CONDA_ENVS = '/opt/conda/envs';

/** Written into a Conda env the agent made once `conda create` has finished; an env without it is never used. */
export const CONDA_MARKER = 'dstack-conda-env.json';

/** Where to look for an interpreter, and where the agent keeps the Conda envs it makes. */
export interface PythonLookup {
  /** The PATH the job gets (the agent's clean base): `pythonX.Y`, `python3` and `conda` are looked for on it. */
  path: string;
  /**
   * The agent's cache of Conda envs (`<backend.root>/conda`), shared by the agents of this machine:
   * `pyX.Y` there is used when complete, and made there with `conda` from `path` when it is not.
   * Without it, no Conda env is looked for or made.
   */
  condaRoot?: string;
  /** The image's Conda envs (`<imageEnvs>/pyX.Y`); IMAGE_CONDA_ENVS unless a test says otherwise. */
  imageEnvs?: string;
}

/** Where `python: X.Y` comes from: an interpreter that is there, or a Conda env that `conda` will make. */
export type PythonSource =
  | { kind: 'interpreter'; interpreter: string; from: 'image' | 'conda-cache' | 'path' | 'pyenv' }
  | { kind: 'create'; conda: string; prefix: string };

/** How the agent makes a Conda env, when it has to. */
export interface FindPythonOptions {
  /** See PythonLookup.condaRoot. */
  condaRoot?: string;
  /** See PythonLookup.imageEnvs. */
  imageEnvs?: string;
  /** The environment `conda create` runs with (PATH, proxies; its HOME is replaced); `{PATH: path}` when not given. */
  env?: NodeJS.ProcessEnv;
  /** The job's stderr: what is being made, and conda's own output as it comes. */
  say?: (data: Buffer | string) => void;
  /** Aborted when the attempt must end at once: a running `conda create` is killed. */
  signal?: AbortSignal;
}

/**
 * The interpreter for `python: X.Y` (any python3 when `version` is undefined), in this order:
 * the image's Conda env `pyX.Y`; the agent's own Conda env `pyX.Y` under `condaRoot`, made with
 * `conda` from PATH the first time a job asks for it; `pythonX.Y` (or a python3 of that version) on
 * PATH; `~/.pyenv/versions/X.Y*`. Undefined when none of these can serve it.
 */
export async function findPython(version: string | undefined, path: string, o: FindPythonOptions = {}): Promise<string | undefined> {
  const source = await locatePython(version, { path, ...(o.condaRoot !== undefined ? { condaRoot: o.condaRoot } : {}), ...(o.imageEnvs !== undefined ? { imageEnvs: o.imageEnvs } : {}) });
  if (source === undefined) return undefined;
  if (source.kind === 'interpreter') return source.interpreter;
  return createCondaEnv(source, minorOf(version ?? ''), { env: o.env ?? { PATH: path }, say: o.say ?? (() => undefined), ...(o.signal ? { signal: o.signal } : {}) });
}

/**
 * Where `python: X.Y` would come from (see findPython), without making anything: what the
 * submit-time check asks. A Conda env still to be made counts: the agent makes it.
 */
export function locatePython(version: string | undefined, o: PythonLookup): Promise<PythonSource | undefined> {
  // Interpreters do not come and go while an agent runs; looking once per version saves every job ~50 ms.
  // An env still to be made is looked for again: once made, it is an interpreter.
  const key = JSON.stringify([version ?? '', o.path, o.condaRoot ?? '', o.imageEnvs ?? IMAGE_CONDA_ENVS]);
  let found = located.get(key);
  if (!found) {
    found = searchPython(version, o);
    located.set(key, found);
    found.then(
      (s) => s?.kind === 'create' && located.delete(key),
      () => located.delete(key),
    );
  }
  return found;
}

const located = new Map<string, Promise<PythonSource | undefined>>();

/** What the submit-time refusal says was looked for. */
export function pythonLookedFor(version: string): string {
  const minor = minorOf(version);
  return `${IMAGE_CONDA_ENVS}/py${minor}, \`conda\` on PATH, python${minor} on PATH and ~/.pyenv/versions/${minor}*`;
}

async function searchPython(version: string | undefined, o: PythonLookup): Promise<PythonSource | undefined> {
  const dirs = o.path.split(delimiter).filter((d) => d.length > 0 && isAbsolute(d));
  if (version === undefined) {
    for (const name of ['python3', 'python']) {
      for (const dir of dirs) {
        const candidate = join(dir, name);
        if ((await pythonVersion(candidate)) !== undefined) return { kind: 'interpreter', interpreter: await realInterpreter(candidate), from: 'path' };
      }
    }
    return undefined;
  }
  const minor = minorOf(version);
  const image = join(o.imageEnvs ?? IMAGE_CONDA_ENVS, `py${minor}`, 'bin', 'python');
  if ((await pythonVersion(image)) === minor) return { kind: 'interpreter', interpreter: await realInterpreter(image), from: 'image' };
  if (o.condaRoot !== undefined) {
    const prefix = join(o.condaRoot, `py${minor}`);
    const ready = await readyCondaEnv(prefix, minor);
    if (ready !== undefined) return { kind: 'interpreter', interpreter: ready, from: 'conda-cache' };
    const conda = await onPath('conda', o.path);
    if (conda !== undefined) return { kind: 'create', conda, prefix };
  }
  for (const name of [`python${minor}`, 'python3', 'python']) {
    for (const dir of dirs) {
      const candidate = join(dir, name);
      if ((await pythonVersion(candidate)) === minor) return { kind: 'interpreter', interpreter: await realInterpreter(candidate), from: 'path' };
    }
  }
  const pyenv = join(homedir(), '.pyenv', 'versions');
  const installed = await readdir(pyenv).catch(() => [] as string[]);
  for (const v of installed.filter((v) => v === minor || v.startsWith(`${minor}.`)).sort().reverse()) {
    const candidate = join(pyenv, v, 'bin', `python${minor}`);
    if ((await pythonVersion(candidate)) === minor) return { kind: 'interpreter', interpreter: await realInterpreter(candidate), from: 'pyenv' };
  }
  return undefined;
}

interface CreateOptions {
  env: NodeJS.ProcessEnv;
  say: (data: Buffer | string) => void;
  signal?: AbortSignal;
}

/**
 * `conda create --prefix <condaRoot>/pyX.Y python=X.Y`, once for the machine: the agent that takes
 * the lock (`pyX.Y.lock`, refreshed while it holds it, stale when its holder died) makes the env,
 * removing what a creator that died left half-made, and marks it complete; the others wait for
 * the lock, then find the mark and use the env. Conda envs are not relocatable (conda writes the
 * prefix into scripts), so the env is made at the path it keeps.
 */
async function createCondaEnv(source: { conda: string; prefix: string }, minor: string, o: CreateOptions): Promise<string> {
  const { prefix } = source;
  await mkdir(join(prefix, '..'), { recursive: true });
  let waiting = false;
  let release: (() => Promise<void>) | undefined;
  for (;;) {
    o.signal?.throwIfAborted();
    try {
      release = await lockfile.lock(prefix, {
        realpath: false,
        lockfilePath: `${prefix}.lock`,
        stale: 30_000,
        retries: 0,
        // A lost lock means another agent may now make the env too; the mark still says when one is complete.
        onCompromised: () => undefined,
      });
      break;
    } catch (e) {
      if (errnoCode(e) !== 'ELOCKED') throw e;
    }
    const ready = await readyCondaEnv(prefix, minor);
    if (ready !== undefined) return ready;
    if (!waiting) o.say(`dstack: waiting for another job to finish creating the Conda env for Python ${minor} (${prefix})\n`);
    waiting = true;
    // An abort rejects with a generic AbortError: the attempt needs the signal's own reason (a stop, a forced stop).
    await sleep(500, undefined, o.signal ? { signal: o.signal } : {}).catch((e: unknown) => {
      throw o.signal?.aborted ? o.signal.reason : e;
    });
  }
  try {
    const ready = await readyCondaEnv(prefix, minor);
    if (ready !== undefined) {
      if (waiting) o.say(`dstack: using the Conda env for Python ${minor} another job created\n`);
      return ready;
    }
    // Whatever is there has no mark: a creator died half-way.
    await rm(prefix, { recursive: true, force: true });
    o.say(`dstack: creating a Conda env for Python ${minor} in ${prefix} (once: later jobs reuse it)\n`);
    // A HOME of the agent's: the job's may be the job user's, whose ~/.condarc must not choose the
    // channels of a conda the agent runs (as root, on the image), nor get root's ~/.conda in it.
    const home = join(prefix, '..', '.home');
    await mkdir(home, { recursive: true, mode: 0o700 });
    const code = await runConda(source.conda, ['create', '--prefix', prefix, `python=${minor}`, '--yes', '--quiet'], { ...o, env: { ...o.env, HOME: home } });
    if (code !== 0) {
      await rm(prefix, { recursive: true, force: true }).catch(() => undefined);
      throw new JobFailedError(`\`conda create --prefix ${prefix} python=${minor}\` exited with code ${code}: see its output above`);
    }
    const python = join(prefix, 'bin', 'python');
    const got = await pythonVersion(python);
    if (got !== minor) {
      await rm(prefix, { recursive: true, force: true }).catch(() => undefined);
      throw new JobFailedError(`\`conda create\` made ${python} with Python ${got ?? 'that does not run'}, not ${minor}`);
    }
    await writeFile(join(prefix, CONDA_MARKER), `${JSON.stringify({ python: minor, conda: source.conda, createdAt: new Date().toISOString() })}\n`, { flag: 'wx' });
    return realInterpreter(python);
  } finally {
    await release().catch(() => undefined);
  }
}

/** The env's interpreter when the env is complete (marked) and runs Python `minor`. */
async function readyCondaEnv(prefix: string, minor: string): Promise<string | undefined> {
  try {
    await stat(join(prefix, CONDA_MARKER));
  } catch {
    return undefined;
  }
  const python = join(prefix, 'bin', 'python');
  return (await pythonVersion(python)) === minor ? realInterpreter(python) : undefined;
}

/** Runs conda with its output going to the job's stderr as it comes; its exit code. */
function runConda(conda: string, args: string[], o: CreateOptions): Promise<number> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(conda, args, {
      env: o.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      shell: false,
      ...(o.signal ? { signal: o.signal, killSignal: 'SIGKILL' as const } : {}),
    });
    child.stdout.on('data', (d: Buffer) => o.say(d));
    child.stderr.on('data', (d: Buffer) => o.say(d));
    child.on('error', (e) => reject(o.signal?.aborted ? o.signal.reason : toError(e)));
    child.on('close', (code, signal) => (o.signal?.aborted ? reject(o.signal.reason) : resolveRun(code ?? (signal ? 128 : 1))));
  });
}

/**
 * A line for the top of a job's bash script when `conda` is on `path`: conda's shell function, which
 * a non-interactive bash lacks, so that `conda activate ENV` works as in the 0.0.x docs' example
 * (an env made by one workflow, restored through deps in the next). Undefined without conda; a
 * hook that fails defines nothing and the script goes on.
 */
export async function condaShellHook(path: string): Promise<string | undefined> {
  const conda = await onPath('conda', path);
  return conda === undefined ? undefined : `eval "$('${conda.replace(/'/g, `'\\''`)}' shell.bash hook 2>/dev/null)"`;
}

/** `3.10.4` asks for `3.10`. */
function minorOf(version: string): string {
  return version.split('.').slice(0, 2).join('.');
}

async function pythonVersion(bin: string): Promise<string | undefined> {
  try {
    await stat(bin);
  } catch {
    return undefined;
  }
  const r = await exec(bin, ['-c', 'import sys; print("%d.%d" % sys.version_info[:2])']).catch(() => undefined);
  return r && r.code === 0 ? r.stdout.toString().trim() : undefined;
}

/** Resolves pyenv-style shims to the interpreter they run, so the job does not depend on shim state. */
async function realInterpreter(bin: string): Promise<string> {
  const r = await exec(bin, ['-c', 'import sys; print(sys.executable)']).catch(() => undefined);
  const exe = r && r.code === 0 ? r.stdout.toString().trim() : '';
  return exe.length > 0 ? exe : bin;
}

