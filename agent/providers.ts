import { chmod, mkdir, stat, writeFile, readdir } from 'node:fs/promises';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { createServer } from 'node:net';
import { JobFailedError } from '../common/errors.js';
import { exec } from '../common/exec.js';
import { substitute, type JobSpec } from '../common/spec/job-spec.js';
import { RUNNABLE_PROVIDERS, isServerProvider, type ServerProvider } from '../common/spec/schema.js';
import { DEV_SERVERS, SERVER_TOKEN, findDevServer } from '../common/dev-tools.js';
import { planServer, type ServerPlan } from './server.js';
import { baseEnv as cleanBase, buildJobEnv } from './environment.js';

/** What the agent runs for a job: a bash script, in a directory, with an environment. */
export interface PreparedRun {
  script: string;
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** The Python the job runs, when one was found: the base of the venv for `requirements`. */
  interpreter?: string;
  /** The job's ports (PORT_0…), on 127.0.0.1. */
  ports: number[];
  /** The GPUs (nvidia-smi indices) the job was given; set just before it starts. */
  gpus?: number[];
  /** A dev environment's server (code, lab, notebook), started by the script's last line. */
  server?: ServerPlan & { token: string };
}

export interface PrepareOptions {
  /** `local.codeServer`: the code-server program when it is not on PATH. */
  codeServer?: string;
}


/**
 * Prepares the bash and python providers: the interpreter the job asks for (as `python`, `python3`
 * and `pip` first on PATH), the job's environment (see environment.ts; `extraEnv` is the secrets), and
 * the script of its commands under `set -e`.
 */
export async function prepareRun(
  spec: JobSpec,
  jobDir: string,
  codeDir: string,
  baseEnv: NodeJS.ProcessEnv,
  extraEnv: Record<string, string> = {},
  options: PrepareOptions = {},
): Promise<PreparedRun> {
  if (!RUNNABLE_PROVIDERS.includes(spec.provider)) {
    throw new JobFailedError(`provider \`${spec.provider}\` is not supported by this agent yet: use \`provider: bash\` or \`provider: python\``);
  }
  const binDir = join(jobDir, 'bin');
  await mkdir(binDir, { recursive: true });
  const interpreter = await findPython(spec.python, baseEnv.PATH ?? '');
  if (spec.python !== undefined && interpreter === undefined) {
    throw new JobFailedError(
      `Python ${spec.python} is not installed on this agent: install it (python${spec.python} on PATH) or change \`python:\` in workflow \`${spec.workflow}\``,
    );
  }
  if (interpreter !== undefined) {
    // Scripts that exec the interpreter by its own path, not links to it: Python takes the path it was
    // started by as sys.executable, so `python -m venv env` through a link would make env/bin/python
    // (and pyvenv.cfg's home) point into this job's folder, which is gone by the time the venv is
    // restored as an artifact.
    const exe = `'${interpreter.replace(/'/g, `'\\''`)}'`;
    const shims = { python: '', python3: '', pip: ' -m pip', pip3: ' -m pip' };
    for (const [name, args] of Object.entries(shims)) {
      await writeFile(join(binDir, name), `#!/bin/sh\nexec ${exe}${args} "$@"\n`);
      await chmod(join(binDir, name), 0o755);
    }
  }
  // `${{ run.name }}` is filled in here, so that a restarted run sees its own name.
  const vars = { 'run.name': spec.runName };
  const ports = spec.fixedPorts ? await claimFixedPorts(spec.fixedPorts) : await Promise.all(Array.from({ length: spec.portCount }, () => freePort()));
  const { [SERVER_TOKEN]: token, ...secretEnv } = extraEnv;
  const cwd = join(codeDir, spec.workingDir);
  const server = isServerProvider(spec.provider) ? await prepareServer(spec.provider, token, cwd, jobDir, baseEnv.PATH ?? '', options) : undefined;
  const env: NodeJS.ProcessEnv = buildJobEnv({
    // Filtered again here: whatever the caller passes, only the base variables reach the job.
    base: cleanBase(baseEnv),
    workflowEnv: substitute(spec.env, vars),
    binDir,
    runName: spec.runName,
    jobId: spec.jobId,
    ports,
    extraEnv: { ...secretEnv, ...(server?.env ?? {}) },
  });
  const script = join(jobDir, 'run.sh');
  await writeFile(script, ['set -e', ...substitute(spec.commands, vars), ...(server ? [server.command] : []), ''].join('\n'));
  try {
    if (!(await stat(cwd)).isDirectory()) throw new Error('not a directory');
  } catch {
    throw new JobFailedError(`working_dir \`${spec.workingDir}\` does not exist in the repo: create it or fix \`working_dir\``);
  }
  return { script, cwd, env, ports, ...(interpreter !== undefined ? { interpreter } : {}), ...(server ? { server } : {}) };
}


async function prepareServer(
  provider: ServerProvider,
  token: string | undefined,
  cwd: string,
  jobDir: string,
  path: string,
  options: PrepareOptions,
): Promise<ServerPlan & { token: string }> {
  if (token === undefined || token.length < 16) {
    throw new JobFailedError(`the ${provider} dev environment has no token (the run secret ${SERVER_TOKEN}): submit it again with \`dstack run\``);
  }
  const binary = await findDevServer(provider, path, options.codeServer);
  if (binary === undefined) {
    const { what, install } = DEV_SERVERS[provider];
    throw new JobFailedError(`${what} is not installed on this agent's machine: ${install}`);
  }
  const runtime = join(jobDir, 'server');
  await mkdir(runtime, { recursive: true, mode: 0o700 });
  const plan = planServer({ provider, binary, cwd, port: await freePort(), token, jobDir: runtime });
  // Jupyter's runtime files (its connection files) and settings stay in the job's folder, not in a HOME shared by jobs.
  if (provider !== 'code') Object.assign(plan.env, { JUPYTER_RUNTIME_DIR: join(runtime, 'runtime'), JUPYTER_DATA_DIR: join(runtime, 'data'), IPYTHONDIR: join(runtime, 'ipython') });
  return { ...plan, token };
}

/** `ports: [8888, 6006]`: the job gets exactly these, or the attempt fails naming the one that is taken. */
async function claimFixedPorts(ports: number[]): Promise<number[]> {
  for (const port of ports) {
    const problem = await portProblem(port);
    if (problem === 'EACCES') throw new JobFailedError(`port ${port} of \`ports\` needs root on this machine: use a port above 1023, or \`ports: ${ports.length}\` to get free ports as $PORT_0…`);
    if (problem !== undefined) {
      throw new JobFailedError(`port ${port} of \`ports\` is taken on this machine: stop what listens on it, or use \`ports: ${ports.length}\` to get free ports as $PORT_0…`);
    }
  }
  return ports;
}

/** Undefined when the port can be listened on; else the error's code. */
function portProblem(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'EADDRINUSE'));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(undefined)));
  });
}

/** Finds an interpreter of the requested `major.minor` (or any python3 when none is asked for). */
export function findPython(version: string | undefined, path: string): Promise<string | undefined> {
  // Interpreters do not come and go while an agent runs; looking once per version saves every job ~50 ms.
  const key = `${version ?? ''}\0${path}`;
  let found = pythonCache.get(key);
  if (!found) {
    found = searchPython(version, path);
    pythonCache.set(key, found);
  }
  return found;
}

const pythonCache = new Map<string, Promise<string | undefined>>();

async function searchPython(version: string | undefined, path: string): Promise<string | undefined> {
  const candidates: string[] = [];
  const dirs = path.split(delimiter).filter((d) => d.length > 0);
  const minor = version?.split('.').slice(0, 2).join('.');
  const names = minor ? [`python${minor}`, 'python3', 'python'] : ['python3', 'python'];
  for (const name of names) for (const dir of dirs) candidates.push(join(dir, name));
  if (minor) {
    candidates.push(`/opt/conda/envs/py${minor}/bin/python`);
    const pyenv = join(homedir(), '.pyenv', 'versions');
    const installed = await readdir(pyenv).catch(() => [] as string[]);
    for (const v of installed.filter((v) => v === minor || v.startsWith(`${minor}.`)).sort().reverse()) {
      candidates.push(join(pyenv, v, 'bin', `python${minor}`));
    }
  }
  for (const candidate of candidates) {
    const found = await pythonVersion(candidate);
    if (found !== undefined && (version === undefined || sameMinor(found, version))) return realInterpreter(candidate);
  }
  return undefined;
}

/** `3.10` matches `3.10`, and `3.10.4` asks for `3.10`. */
function sameMinor(found: string, wanted: string): boolean {
  return found === wanted.split('.').slice(0, 2).join('.');
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

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
