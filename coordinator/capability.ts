import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { locatePython, pythonLookedFor } from '../agent/python-find.js';
import { DEFAULT_PATH } from '../agent/environment.js';
import { DEV_SERVERS, findDevServer } from '../common/dev-tools.js';
import { UsageError } from '../common/errors.js';
import { gpuNameMatches, listGpus, onPath, shortGpuName, type Gpu } from '../common/gpus.js';
import type { JobSpec, ResourceSpec } from '../common/spec/job-spec.js';
import { isServerProvider } from '../common/spec/schema.js';
import type { Context } from './context.js';

export { listGpus, type Gpu };

/** What this machine offers the jobs of its local agents. */
export interface MachineFacts {
  cpus: number;
  memoryMiB: number;
  gpus: Gpu[];
}

/** What a submit-time check needs to know about the tools the local agents would use. */
export interface LocalTools {
  /** The agents' PATH: local agents inherit the CLI's. */
  path: string;
  /** `local.codeServer`. */
  codeServer?: string | undefined;
  /** The local agents' Conda envs (`<backend.root>/conda`): one made there earlier serves `python:`, and `conda` on PATH makes one. */
  condaRoot?: string | undefined;
}

/**
 * Whether this CLI's runs go to agents on this machine: the local backend, or `aws` with `agents: local`.
 * Only then can it know, before submitting, what the agent will find.
 */
export function agentsAreLocal(ctx: Pick<Context, 'config'>): boolean {
  return ctx.config.backend === 'local' || (ctx.config.backend === 'aws' && ctx.config.aws?.agents === 'local');
}

/**
 * For local agents, refuses (a UsageError, exit 2, before anything is stored) a job this machine can't
 * run: a dev-environment server that is not installed, a `python:` no interpreter here provides, or more
 * CPUs, memory or GPUs than the machine has. One line per problem, each beginning with `where`
 * (file:line); the resource line names what the machine has and the overrides that run it anyway.
 */
export async function refuseWhatThisMachineCannotRun(ctx: Pick<Context, 'config' | 'shellEnv'>, where: string, spec: JobSpec): Promise<void> {
  if (ctx.config.backend === 'aws' && ctx.config.aws?.agents === 'ec2') {
    const problem = imageProblem(spec, ctx.config.aws.ami !== undefined);
    if (problem) throw new UsageError(`${where}: ${problem}`);
    return;
  }
  if (!agentsAreLocal(ctx)) return;
  // The agents keep their Conda envs in <backend.root>/conda, and the backend's root is DSTACK_HOME/local (common/backend.ts).
  const tools: LocalTools = { path: ctx.shellEnv.PATH ?? DEFAULT_PATH, codeServer: ctx.config.local.codeServer, condaRoot: join(ctx.config.home, 'local', 'conda') };
  const problems = await capabilityProblems(spec, tools, () => machineFacts(tools.path));
  if (problems.length > 0) throw new UsageError(problems.map((p) => `${where}: ${p}`).join('\n'));
}

/** The problems (without a location) that keep `spec` from running here; empty when it can run. */
export async function capabilityProblems(spec: Pick<JobSpec, 'workflow' | 'provider' | 'python' | 'resources'>, tools: LocalTools, facts: () => Promise<MachineFacts>): Promise<string[]> {
  const problems: string[] = [];
  const r = spec.resources;
  if (r.cpu !== undefined || r.memoryMiB !== undefined || r.gpu !== undefined) {
    const resource = resourceProblem(spec.workflow, r, await facts());
    if (resource !== undefined) problems.push(resource);
  }
  const { provider } = spec;
  if (isServerProvider(provider) && (await findDevServer(provider, tools.path, tools.codeServer)) === undefined) {
    const server = DEV_SERVERS[provider];
    const missing =
      provider === 'code' && tools.codeServer !== undefined ? `\`local.codeServer\` (${tools.codeServer}) is not an executable` : `\`${server.binary}\` is not on PATH`;
    problems.push(`workflow \`${spec.workflow}\` (\`provider: ${provider}\`) needs ${server.what}, and ${missing}: ${server.install}`);
  }
  if (provider === 'docker' && (await onPath('docker', tools.path)) === undefined) {
    problems.push(`workflow \`${spec.workflow}\` (\`provider: docker\`) needs Docker, and \`docker\` is not on PATH: install Docker (apt-get install docker.io) and start its daemon`);
  }
  if (spec.python !== undefined && (await locatePython(spec.python, { path: tools.path, ...(tools.condaRoot !== undefined ? { condaRoot: tools.condaRoot } : {}) })) === undefined) {
    problems.push(
      `workflow \`${spec.workflow}\` asks for \`python: ${spec.python}\`, which no interpreter on this machine provides (looked for ${pythonLookedFor(spec.python)}): install Python ${spec.python} or conda, or change \`python:\``,
    );
  }
  return problems;
}

/** The line for a resource request this machine can't meet, or undefined when it can. */
export function resourceProblem(workflow: string, r: ResourceSpec, m: MachineFacts): string | undefined {
  const asked: string[] = [];
  const fixes: string[] = [];
  if (r.gpu !== undefined && r.gpu.count > 0) {
    const { count, name, memoryMiB } = r.gpu;
    const fit = m.gpus.filter((g) => (name === undefined || gpuNameMatches(g.name, name)) && (memoryMiB === undefined || g.memoryMiB >= memoryMiB));
    if (fit.length < count) {
      asked.push(`${count} ${name ?? ''}${name === undefined ? '' : ' '}GPU${count === 1 ? '' : 's'}${memoryMiB === undefined ? '' : ` with ${size(memoryMiB)}`}`);
      if (m.gpus.length === 0) {
        fixes.push('--gpu 0');
      } else {
        // The machine has GPUs, just not these: ask for what it has.
        fixes.push(`--gpu ${Math.min(count, m.gpus.length)}`);
        const first = m.gpus[0];
        if (first && name !== undefined && !m.gpus.some((g) => gpuNameMatches(g.name, name))) fixes.push(`--gpu-name ${shortGpuName(first.name)}`);
        const most = Math.max(...m.gpus.map((g) => g.memoryMiB));
        if (memoryMiB !== undefined && memoryMiB > most) fixes.push(`--gpu-memory ${size(fitting(most))}`);
      }
    }
  }
  if (r.memoryMiB !== undefined && r.memoryMiB > m.memoryMiB) {
    asked.push(`${size(r.memoryMiB)} of memory`);
    fixes.push(`--memory ${size(fitting(m.memoryMiB / 2))}`);
  }
  if (r.cpu !== undefined && r.cpu > m.cpus) {
    asked.push(`${r.cpu} CPUs`);
    fixes.push(`--cpu ${m.cpus}`);
  }
  if (asked.length === 0) return undefined;
  const gpus = m.gpus.length === 0 ? 'no GPU' : gpuList(m.gpus);
  return `workflow \`${workflow}\` asks for ${list(asked)}, and this machine has ${gpus}, ${size(m.memoryMiB)} of memory and ${m.cpus} CPU${m.cpus === 1 ? '' : 's'}: run it here anyway with \`dstack run ${workflow} ${fixes.join(' ')}\``;
}

/** This machine: CPUs and memory from the OS, GPUs from `nvidia-smi` when it is on `path` (none otherwise). */
export async function machineFacts(path: string): Promise<MachineFacts> {
  return { cpus: cpus().length, memoryMiB: Math.floor(totalmem() / 2 ** 20), gpus: await listGpus(path) };
}

/** `2×A10G (22.5GB)`, or `1×T4 (15GB) and 1×A10G (22.5GB)`. */
function gpuList(gpus: Gpu[]): string {
  const groups = new Map<string, number>();
  for (const g of gpus) {
    const key = `${shortGpuName(g.name)} (${size(g.memoryMiB)})`;
    groups.set(key, (groups.get(key) ?? 0) + 1);
  }
  return list([...groups].map(([key, n]) => `${n}×${key}`));
}

/** The largest power of two MiB not above `mib`: a round size that fits (23.4GB of memory → 8GB for half of it). */
function fitting(mib: number): number {
  let n = 1;
  while (n * 2 <= mib) n *= 2;
  return n;
}

/** Sizes as workflows write them: `64GB`, `22.5GB`, `512MB`. */
function size(mib: number): string {
  if (mib < 1024) return `${Math.round(mib)}MB`;
  const gb = mib / 1024;
  return Number.isInteger(gb) ? `${gb}GB` : `${gb.toFixed(1)}GB`;
}

function list(items: string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} and ${items.at(-1) ?? ''}`;
}

/** The Pythons of dstack's agent image (ami/install-conda.sh: /opt/conda/envs/py3.7 … py3.11). */
export const IMAGE_PYTHONS = ['3.7', '3.8', '3.9', '3.10', '3.11'] as const;

/**
 * What dstack's own agent image can't serve: a `python:` it has no env for. An image given as
 * `aws.ami` may have been built with other versions (DSTACK_PYTHON_VERSIONS), so it is not judged.
 */
export function imageProblem(spec: Pick<JobSpec, 'workflow' | 'python'>, customImage: boolean): string | undefined {
  if (spec.python === undefined || customImage) return undefined;
  const minor = spec.python.split('.').slice(0, 2).join('.');
  if ((IMAGE_PYTHONS as readonly string[]).includes(minor)) return undefined;
  return `workflow \`${spec.workflow}\` asks for \`python: ${spec.python}\`, and the EC2 agents' image has Python ${IMAGE_PYTHONS.join(', ')}: use one of these, or build an image with it (DSTACK_PYTHON_VERSIONS, see ami/README.md) and set \`aws.ami\``;
}
