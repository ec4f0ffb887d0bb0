import { delimiter } from 'node:path';

/**
 * The job's environment, built from nothing: a clean base taken by name from the agent's own
 * environment, the workflow's env, the secrets, and dstack's job variables. Nothing else of the
 * agent's environment (AWS_*, DSTACK_*, tokens) reaches a job.
 */

/** When the agent has no PATH: the usual system directories. */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * What a job takes from the agent's environment, by name, when set: who and where it runs as, its
 * locale, how it reaches the network (a proxy, the CA certificates to trust), and the machine's
 * Python/Conda/CUDA setup. PATH is the agent's, because the Python lookup
 * searches it: the job finds the same interpreters and tools.
 */
export const BASE_VARS = [
  'PATH',
  'HOME',
  'USER',
  'LOGNAME',
  'SHELL',
  'LANG',
  'LANGUAGE',
  'LC_ALL',
  'LC_CTYPE',
  'TZ',
  'http_proxy',
  'https_proxy',
  'no_proxy',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'NO_PROXY',
  'SSL_CERT_FILE',
  'SSL_CERT_DIR',
  'REQUESTS_CA_BUNDLE',
  // The Python, Conda and CUDA setup of the machine (the AMI's unit sets PIP_CACHE_DIR, so jobs share one pip cache).
  'PIP_CACHE_DIR',
  'CONDA_PKGS_DIRS',
  'CONDA_ENVS_PATH',
  'CUDA_HOME',
  'LD_LIBRARY_PATH',
] as const;

/** The clean base of every job's environment, from the agent's environment. */
export function baseEnv(agentEnv: Record<string, string | undefined>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of BASE_VARS) {
    const value = agentEnv[name];
    if (value !== undefined && value !== '') env[name] = value;
  }
  env.PATH ??= DEFAULT_PATH;
  return env;
}

export interface JobEnvInput {
  /** From `baseEnv`. */
  base: Record<string, string>;
  /** The workflow's `env`, already resolved (`${{ run.name }}` filled in). */
  workflowEnv: Record<string, string>;
  /** Put first on PATH: the job's `python`, `python3` and `pip`. */
  binDir: string;
  runName: string;
  jobId: string;
  /** The ports the job may listen on: PORT_i and JOB_PORT_i. */
  ports: number[];
  /** Set by the secret injection: over the workflow's env, under dstack's own variables. */
  extraEnv?: Record<string, string>;
}

/**
 * The job's environment: base, then the workflow's env, then `extraEnv`, then dstack's job
 * variables (RUN_NAME, JOB_ID, PYTHONUNBUFFERED, PORT_i, JOB_PORT_i) and PATH with `binDir` first.
 * VIRTUAL_ENV is added later, when a venv is made for `requirements`.
 */
export function buildJobEnv(i: JobEnvInput): Record<string, string> {
  const env: Record<string, string> = { ...i.base, ...i.workflowEnv, ...(i.extraEnv ?? {}) };
  env.PATH = [i.binDir, i.base.PATH ?? DEFAULT_PATH].join(delimiter);
  env.RUN_NAME = i.runName;
  env.JOB_ID = i.jobId;
  env.PYTHONUNBUFFERED = '1';
  i.ports.forEach((port, n) => {
    env[`PORT_${n}`] = String(port);
    env[`JOB_PORT_${n}`] = String(port);
  });
  return env;
}
