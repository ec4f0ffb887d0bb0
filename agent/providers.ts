import { chmod, mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { JobFailedError } from '../common/errors.js';
import { substitute, type JobSpec } from '../common/spec/job-spec.js';
import { RUNNABLE_PROVIDERS, isServerProvider, type ServerProvider } from '../common/spec/schema.js';
import { DEV_SERVERS, SERVER_TOKEN, findDevServer } from '../common/dev-tools.js';
import { planServer, type ServerPlan } from './server.js';
import { baseEnv as cleanBase, buildJobEnv } from './environment.js';
import { condaShellHook, findPython, pythonLookedFor, type FindPythonOptions } from './python-find.js';

export { findPython } from './python-find.js';

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
  /** Where `python: X.Y` may be made (the agent's Conda cache) and where that says what it does (the job's log). */
  python?: Omit<FindPythonOptions, 'env'>;
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
  const interpreter = await findPython(spec.python, baseEnv.PATH ?? '', { ...options.python, env: baseEnv });
  if (spec.python !== undefined && interpreter === undefined) {
    throw new JobFailedError(
      `Python ${spec.python} is not installed on this agent (looked for ${pythonLookedFor(spec.python)}): install Python ${spec.python} or conda, or change \`python:\` in workflow \`${spec.workflow}\``,
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
  const commands = substitute(spec.commands, vars);
  // `conda activate` needs conda's shell function, which a non-interactive bash lacks: defined first
  // when the commands use conda (the hook costs a Python start, so not for every job).
  const hook = spec.provider !== 'docker' && commands.some((c) => /\bconda\b/.test(c)) ? await condaShellHook(env.PATH ?? '') : undefined;
  await writeFile(script, ['set -e', ...(hook ? [hook] : []), ...commands, ...(server ? [server.command] : []), ''].join('\n'));
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
