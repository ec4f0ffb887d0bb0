import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { JobFailedError } from '../../common/errors.js';
import { exec, onPath } from '../../common/exec.js';
import type { Logger } from '../../common/log.js';
import { substitute, type JobSpec } from '../../common/spec/job-spec.js';
import { BASE_VARS } from '../environment.js';
import { startJob, type JobProcess } from '../job-process.js';
import type { PreparedRun } from '../providers.js';

/**
 * The docker runtime: a job's commands in a container of its workflow's image, through the `docker`
 * CLI. The CLI, not a client library: the watchdog that must kill a container once its agent is gone
 * is a shell loop (job-process.ts) that can call `docker kill`; `docker pull` prints its own
 * progress; a registry login is a config folder of the job's; and every Docker install (the AMI's
 * included) has the CLI.
 */

/** Where the code folder is mounted in the container; `working_dir` is relative to it. */
export const CONTAINER_ROOT = '/workflow';

/** The repo secrets that log in to the image's registry: used for the pull, never given to the job. */
export const REGISTRY_USERNAME = 'DSTACK_REGISTRY_USERNAME';
export const REGISTRY_PASSWORD = 'DSTACK_REGISTRY_PASSWORD';

/** The label every container of dstack's carries; the others name its run, attempt and agent. */
export const LABEL = 'dstack.job';

/** The docker CLI and the environment it runs with: the agent's DOCKER_* settings, never the job's. */
export interface DockerClient {
  docker: string;
  env: NodeJS.ProcessEnv;
}

/** The image a job ran, as recorded in its attempt: what the workflow named, and the digest it resolved to. */
export interface ImageRecord {
  ref: string;
  digest: string;
  /** What the container was created from, and a restart runs. */
  pinned: string;
}

/** The docker CLI on `path`, with the client settings of `agentEnv`; undefined when there is none. */
export async function dockerClient(agentEnv: NodeJS.ProcessEnv): Promise<DockerClient | undefined> {
  const path = agentEnv.PATH ?? '';
  const docker = await onPath('docker', path);
  if (docker === undefined) return undefined;
  const env: NodeJS.ProcessEnv = { PATH: path };
  for (const [k, v] of Object.entries(agentEnv)) if (v !== undefined && (k.startsWith('DOCKER_') || k === 'HOME')) env[k] = v;
  return { docker, env };
}

/** `ubuntu`, `docker.io/library/ubuntu` → the Docker Hub key of a registry login; `127.0.0.1:5000/x` → `127.0.0.1:5000`. */
export function registryOf(image: string): string {
  const first = image.split('/')[0] ?? '';
  const hasHost = image.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost');
  return hasHost && !DOCKER_HUB.has(first) ? first : 'https://index.docker.io/v1/';
}

const DOCKER_HUB = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

/** A repository as docker lists it in RepoDigests: Docker Hub's without its host and `library/`. */
export function shortRepository(repo: string): string {
  const parts = repo.split('/');
  if (parts.length > 1 && DOCKER_HUB.has(parts[0] ?? '')) parts.shift();
  if (parts.length > 1 && parts[0] === 'library') parts.shift();
  return parts.join('/');
}

/** `repo:tag` or `repo@sha256:…` → `repo` (a registry port stays). */
export function repositoryOf(image: string): string {
  const at = image.indexOf('@');
  const name = at >= 0 ? image.slice(0, at) : image;
  const slash = name.lastIndexOf('/');
  const colon = name.lastIndexOf(':');
  return colon > slash ? name.slice(0, colon) : name;
}

export interface PullOptions {
  client: DockerClient;
  image: string;
  /** The job's own folder: a registry login goes into a config folder here, gone with the job. */
  jobDir: string;
  /** DSTACK_REGISTRY_USERNAME and DSTACK_REGISTRY_PASSWORD, when the repo has them. */
  login?: { username: string; password: string };
  /** A line for the job's log (without the `dstack: ` prefix). */
  say: (line: string) => void;
  /** docker's own output, as it comes. */
  output: (chunk: Buffer) => void;
  signal: AbortSignal;
}

/**
 * Pulls the job's image and pins it: returns its name, its digest and the reference the container
 * is created from (`repo@sha256:…`), so that what runs is what is recorded. An image that
 * was built or imported on this machine (no registry digest) is used as it is, by its id.
 */
export async function pullImage(o: PullOptions): Promise<ImageRecord> {
  const env: NodeJS.ProcessEnv = { ...o.client.env };
  if (o.login) {
    // The login lives in a config folder of the job's (0700), never on a command line or in the agent's HOME.
    const config = join(o.jobDir, 'docker-config');
    await mkdir(config, { recursive: true, mode: 0o700 });
    const auth = Buffer.from(`${o.login.username}:${o.login.password}`).toString('base64');
    await writeFile(join(config, 'config.json'), JSON.stringify({ auths: { [registryOf(o.image)]: { auth } } }), { mode: 0o600 });
    env.DOCKER_CONFIG = config;
  }
  const local = await inspectImage(o.client, o.image);
  if (local && local.repoDigests.length === 0 && !o.image.includes('@')) {
    o.say(`image ${o.image} was built on this machine (no registry digest): using it as it is, ${local.id}`);
    return { ref: o.image, digest: local.id, pinned: local.id };
  }
  const repo = repositoryOf(o.image);
  const digestOf = (image: { repoDigests: string[] } | undefined): string | undefined =>
    o.image.includes('@')
      ? o.image.slice(o.image.indexOf('@') + 1)
      : image?.repoDigests.map((d) => d.split('@')).find(([r]) => r !== undefined && shortRepository(r) === shortRepository(repo))?.[1];
  o.say(`pulling image ${o.image}`);
  const started = Date.now();
  const pull = await run(o.client.docker, ['pull', o.image], env, o.output, o.signal);
  if (o.signal.aborted) throw o.signal.reason;
  if (pull.code !== 0) {
    const why = lastLine(pull.stderr) || `docker pull exited with code ${pull.code}`;
    // A machine that can't reach the registry (offline, rate-limited) runs the copy it has, pinned all the same.
    const had = digestOf(local);
    if (local && had !== undefined) {
      o.say(`could not pull image ${o.image} (${why}): using the copy on this machine, ${had}`);
      return { ref: o.image, digest: had, pinned: `${repo}@${had}` };
    }
    const hint = /unauthorized|authentication required|denied|no basic auth credentials|credentials/i.test(why)
      ? `: set the repo secrets ${REGISTRY_USERNAME} and ${REGISTRY_PASSWORD} (\`dstack secrets add\`) for ${registryOf(o.image)}`
      : /manifest unknown|not found|does not exist/i.test(why)
        ? ': check the name and tag in `image:`'
        : ': check that this machine can reach the registry';
    throw new JobFailedError(`could not pull image ${o.image} (${why})${hint}`);
  }
  const pulled = await inspectImage(o.client, o.image);
  const digest = digestOf(pulled);
  if (!pulled || digest === undefined) throw new JobFailedError(`pulled image ${o.image}, but docker reports no digest for it`);
  o.say(`image ${o.image} is ${digest} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  return { ref: o.image, digest, pinned: `${repo}@${digest}` };
}

async function inspectImage(client: DockerClient, image: string): Promise<{ id: string; repoDigests: string[] } | undefined> {
  const r = await exec(client.docker, ['image', 'inspect', '--format', '{{json .Id}} {{json .RepoDigests}}', image], { env: client.env });
  if (r.code !== 0) return undefined;
  const [id, digests] = r.stdout.toString('utf8').trim().split(' ');
  return { id: JSON.parse(id ?? '""') as string, repoDigests: (JSON.parse(digests ?? '[]') as string[] | null) ?? [] };
}

export interface ContainerPlan {
  spec: JobSpec;
  attempt: number;
  agentId: string;
  host: string;
  /** The container's name: `dstack-<job folder name>`. */
  name: string;
  /** What to create it from (`pullImage`'s `pinned`). */
  image: string;
  prepared: PreparedRun;
  codeDir: string;
  /** Absolute artifact paths (the job's and its deps'): each a folder of the job's, mounted at the declared path. */
  absolutePaths: Array<{ host: string; container: string }>;
  /** The agent's uid and gid: a container of a non-root agent runs as it, so that all it writes stays the agent's to save and remove. */
  ids?: { uid: number; gid: number };
}

/** The variables of a host job's environment that describe the host, not the job: the container keeps the image's. */
const HOST_ONLY = new Set<string>(BASE_VARS.filter((v) => !/proxy/i.test(v)));

/**
 * `docker create` arguments. The job's variables go by name only (`-e NAME`): their values reach the
 * client through its environment (`containerEnv`), so no secret is ever on a command line.
 */
export function createArgs(p: ContainerPlan): { args: string[]; env: Record<string, string> } {
  const { spec, prepared } = p;
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(prepared.env)) {
    // The host's base (PATH, HOME, locale…) stays out, unless the workflow's `env` sets it itself.
    if (v === undefined || ((HOST_ONLY.has(k) || k === 'VIRTUAL_ENV') && spec.env[k] === undefined)) continue;
    // Inside, the container's GPUs are numbered from 0: `--gpus` picks them, not these.
    if (k === 'CUDA_VISIBLE_DEVICES' || k === 'NVIDIA_VISIBLE_DEVICES' || k === 'CUDA_DEVICE_ORDER') continue;
    env[k] = v;
  }
  const reserved = Object.keys(env).filter((k) => k.startsWith('DOCKER_'));
  if (reserved.length > 0) throw new JobFailedError(`\`env\` of workflow \`${spec.workflow}\` sets ${reserved.join(', ')}, which docker keeps for itself: rename ${reserved.length === 1 ? 'it' : 'them'}`);
  const workdir = posix.join(CONTAINER_ROOT, spec.workingDir);
  const args = [
    'create',
    '--name', p.name,
    '--label', `${LABEL}=${spec.jobId}`,
    '--label', `dstack.repo=${spec.repoId}`,
    '--label', `dstack.run=${spec.runName}`,
    '--label', `dstack.attempt=${p.attempt}`,
    '--label', `dstack.agent=${p.agentId}`,
    '--label', `dstack.agent-host=${p.host}`,
    '--label', `dstack.agent-pid=${process.pid}`,
    '--init',
    '--volume', `${p.codeDir}:${CONTAINER_ROOT}`,
    '--workdir', workdir,
  ];
  for (const path of p.absolutePaths) args.push('--volume', `${path.host}:${path.container}`);
  for (const port of prepared.ports) args.push('--publish', `127.0.0.1:${port}:${port}`);
  if (p.ids) {
    args.push('--user', `${p.ids.uid}:${p.ids.gid}`);
    // That uid has no home in the image: pip and friends get a writable one (pip then installs for the user).
    if (env.HOME === undefined) env.HOME = '/tmp';
  }
  const r = spec.resources;
  const gpus = prepared.gpus ?? [];
  if (gpus.length > 0) args.push('--gpus', `"device=${gpus.join(',')}"`);
  if (r.shmSizeMiB !== undefined) args.push('--shm-size', `${r.shmSizeMiB}m`);
  if (r.memoryMiB !== undefined) args.push('--memory', `${r.memoryMiB}m`);
  if (r.cpu !== undefined) args.push('--cpus', String(r.cpu));
  for (const k of Object.keys(env).sort()) args.push('--env', k);
  // 0.0.14's docker provider: the commands as one script for `entrypoint` (by default `/bin/sh -c`);
  // without commands, the image's own entrypoint and command run (with `entrypoint`, that alone).
  // `${{ run.name }}` is filled in here, as for a job on the host: a restarted run sees its own name.
  const commands = substitute(spec.commands, { 'run.name': spec.runName });
  const script = commands.length > 0 ? ['set -e', ...commands].join('\n') : undefined;
  const entrypoint = spec.entrypoint ?? (script !== undefined ? ['/bin/sh', '-c'] : undefined);
  if (entrypoint) args.push('--entrypoint', entrypoint[0] ?? '/bin/sh');
  args.push(p.image);
  if (entrypoint) args.push(...entrypoint.slice(1));
  if (script !== undefined) args.push(script);
  return { args, env };
}

/**
 * Creates the job's container and starts it attached: the returned process is the attached client,
 * whose exit code is the container's; stop and abort reach the container, and so does the watchdog.
 */
export async function startContainer(client: DockerClient, p: ContainerPlan, deadlineFile: string | undefined): Promise<JobProcess> {
  const { args, env } = createArgs(p);
  const clientEnv = { ...client.env, ...env };
  const created = await exec(client.docker, args, { env: clientEnv });
  if (created.code !== 0) throw new JobFailedError(`could not create the job's container (${lastLine(created.stderr) || `docker create exited with code ${created.code}`})`);
  return startJob('', {
    cwd: p.codeDir,
    env: client.env,
    command: { command: client.docker, args: ['start', '--attach', p.name] },
    container: { docker: client.docker, name: p.name, env: client.env },
    ...(deadlineFile !== undefined ? { deadlineFile } : {}),
  });
}

/** Removes the job's container, whatever state it is in; a container already gone is fine. */
export async function removeContainer(client: DockerClient, name: string): Promise<void> {
  const r = await exec(client.docker, ['rm', '--force', name], { env: client.env });
  if (r.code !== 0 && !/no such container/i.test(r.stderr)) throw new Error(`could not remove container ${name}: ${lastLine(r.stderr)}`);
}

/**
 * At agent start: removes the containers a dstack agent on this host left behind, this agent's own
 * (same id) and any whose agent process is gone. Containers of live agents are theirs.
 */
export async function removeLeftovers(client: DockerClient, agentId: string, host: string, log: Logger): Promise<number> {
  const r = await exec(client.docker, ['ps', '--all', '--filter', `label=${LABEL}`, '--filter', `label=dstack.agent-host=${host}`, '--format', '{{.Names}}\t{{.Label "dstack.agent"}}\t{{.Label "dstack.agent-pid"}}'], {
    env: client.env,
  });
  if (r.code !== 0) {
    log.log('warn', 'could not list leftover containers: is the Docker daemon running?', { error: lastLine(r.stderr) });
    return 0;
  }
  let removed = 0;
  for (const line of r.stdout.toString('utf8').split('\n').filter((l) => l.length > 0)) {
    const [name, agent, pid] = line.split('\t');
    if (name === undefined) continue;
    const mine = agent === agentId;
    const orphan = pid === undefined || !/^\d+$/.test(pid) || !alive(Number(pid)) || Number(pid) === process.pid;
    if (!mine && !orphan) continue;
    await removeContainer(client, name).then(
      () => {
        removed += 1;
        log.log('info', 'removed a container an earlier agent left behind', { container: name });
      },
      (e: unknown) => log.log('warn', 'could not remove a leftover container', { container: name, error: String(e) }),
    );
  }
  return removed;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function lastLine(text: string): string {
  return text.trim().split('\n').filter((l) => l.trim().length > 0).pop()?.replace(/^Error( response from daemon)?:\s*/i, '').trim() ?? '';
}

/** Runs a docker command, handing its output to `output` as it comes; killed on abort. */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, output: (chunk: Buffer) => void, signal: AbortSignal): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => output(d));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString('utf8');
      output(d);
    });
    const onAbort = (): void => void child.kill('SIGKILL');
    signal.addEventListener('abort', onAbort, { once: true });
    child.once('error', reject);
    child.once('close', (code) => {
      signal.removeEventListener('abort', onAbort);
      resolve({ code: code ?? 1, stderr });
    });
  });
}
