import { posix } from 'node:path';
import { parse as parseShell } from 'shell-quote';
import { SpecError } from '../errors.js';
import type { CodeRef } from '../code-ref.js';
import { ARTIFACT_PATH_RULE, SIZE_PATTERN, durationSeconds, isServerProvider, normalizeArtifactPath, type ParsedWorkflow, type ProviderName } from './schema.js';

/** `idle_duration` of a dev environment that does not set one: 60 minutes. */
export const DEFAULT_IDLE_DURATION_S = 3600;
import type { LocatedWorkflow } from './load.js';

/** A dependency as declared; resolved to a run when the run is submitted. */
export type DepSpec = { kind: 'workflow'; name: string; repo?: string; mount: boolean } | { kind: 'tag'; name: string; repo?: string; mount: boolean };

/** A dep resolved at submit time to one run and the exact manifests of its artifacts. */
export interface PinnedDep {
  kind: 'workflow' | 'tag';
  name: string;
  repoId: string;
  runName: string;
  artifacts: Array<{ path: string; manifestSha: string }>;
}

export interface ArtifactSpec {
  path: string;
  mount: boolean;
}

export interface ResourceSpec {
  cpu?: number;
  memoryMiB?: number;
  gpu?: { count: number; name?: string; memoryMiB?: number };
  shmSizeMiB?: number;
  interruptible: boolean;
  local: boolean;
}

/** Everything an agent needs to run one job; what `dstack run --dry-run` prints. */
export interface JobSpec {
  /**
   * 2 when the spec has `requirements`, which an agent that knows only 1 would not install; 3 when it
   * has `runSecrets`, which an older agent would drop; 4 when it is a dev environment or has fixed
   * ports, a duration limit or an SSH key, which an older agent would ignore; 5 for `provider: docker`,
   * which an older agent would fail.
   */
  specVersion: 1 | 2 | 3 | 4 | 5;
  repoId: string;
  runName: string;
  jobId: string;
  workflow: string;
  provider: ProviderName;
  /** Shell lines run in order in one bash session, stopping at the first failure. */
  commands: string[];
  /** Interpreter version the job asks for (`python: 3.10`), if any. */
  python?: string;
  /**
   * The pip requirements file (relative to `workingDir`), installed by the agent into a virtual
   * environment of the job's interpreter before `commands` run; `python` and `pip` are that venv's.
   */
  requirements?: string;
  env: Record<string, string>;
  /**
   * Bare env names (`env: [WANDB_API_KEY]`, `-e NAME`) whose values were taken from the submitting
   * shell and stored in the secret store under this run: names only, the agent fetches the values.
   */
  runSecrets?: string[];
  /**
   * The names of the repo's secrets when the run was submitted (or restarted): the agent reads their
   * values at job start, by name, so it never has to list the store (its role on EC2 may not).
   */
  secretNames?: string[];
  /** Relative to the repo root. */
  workingDir: string;
  artifacts: ArtifactSpec[];
  deps: DepSpec[];
  /** Filled in at submit time; what the agent restores before the commands start. */
  pinnedDeps: PinnedDep[];
  portCount: number;
  /** `ports: [8888, 6006]`: exactly these ports on the machine (as PORT_0…); absent for `ports: N`, which the agent picks. */
  fixedPorts?: number[];
  /** `max_duration`: the attempt is stopped, with the reason, once its job has run this long. */
  maxDurationS?: number;
  /** `idle_duration` of a dev environment: stopped after this long with no open connection to its ports. */
  idleDurationS?: number;
  /** The submitter's SSH public key (one OpenSSH line): the only key an EC2 agent accepts for this run's forwards and shell. Not a secret. */
  sshKey?: string;
  /** `provider: docker`: the image, as the workflow names it (a restart pins it as `name@sha256:…`). */
  image?: string;
  /** `provider: docker`: `entrypoint`, split as a shell would; the commands' script is its last argument. */
  entrypoint?: string[];
  resources: ResourceSpec;
  runArgs: string[];
  code: CodeRef;
  submittedAt: string;
  /** `cache: true`: a run with the same code, spec and pinned deps may be reused. */
  cache: boolean;
  /** Set at submit time for cached workflows: the key a successful run is recorded under. */
  cacheKey?: string;
}

export interface BuildInput {
  located: LocatedWorkflow;
  repoId: string;
  runName: string;
  jobId: string;
  args: string[];
  /** The submitting shell's environment, for bare `K` env items. */
  shellEnv: Record<string, string | undefined>;
  code: CodeRef;
  now: Date;
}

/** Turns a validated workflow into a job spec: substitutes `${{ run.* }}`, normalizes sizes and env. */
export function buildJobSpec(input: BuildInput): JobSpec {
  const { located, args } = input;
  // `${{ run.name }}` stays for the agent to fill in, so that a restarted run gets its own name.
  const ctx = { 'run.args': args.map(shellQuote).join(' ') };
  const wf = substitute(located.workflow, ctx);
  const fail = (message: string): never => {
    throw new SpecError([{ file: located.file, line: located.line, col: 5, message: `workflow \`${wf.name}\`: ${message}` }]);
  };
  const workingDir = posix.normalize(wf.working_dir ?? '.');
  if (workingDir.startsWith('..') || posix.isAbsolute(workingDir)) fail('`working_dir` must be a path inside the repo');
  const spec: JobSpec = {
    specVersion: 1,
    repoId: input.repoId,
    runName: input.runName,
    jobId: input.jobId,
    workflow: wf.name,
    provider: wf.provider,
    commands: providerCommands(wf, args, fail),
    env: parseEnv(wf.env, input.shellEnv),
    workingDir,
    artifacts: (wf.artifacts ?? []).map((a) => {
      const raw = typeof a === 'string' ? a : a.path;
      const path = normalizeArtifactPath(raw) ?? fail(`artifact \`${raw}\` ${ARTIFACT_PATH_RULE}`);
      return { path, mount: typeof a === 'string' ? false : (a.mount ?? false) };
    }),
    deps: (wf.deps ?? []).map((d) => parseDep(d, fail)),
    pinnedDeps: [],
    portCount: typeof wf.ports === 'number' ? wf.ports : (wf.ports?.length ?? 0),
    resources: parseResources(wf),
    runArgs: args,
    code: input.code,
    submittedAt: input.now.toISOString(),
    cache: wf.cache ?? false,
  };
  const python = wf.provider === 'python' ? (wf.version ?? wf.python) : wf.python;
  if (python !== undefined) spec.python = python;
  if (wf.requirements) {
    spec.requirements = wf.requirements;
    spec.specVersion = 2;
  }
  if (wf.provider === 'docker') {
    // The image brings its own Python: `requirements` and `python` would set up the host's.
    if (wf.requirements !== undefined) fail('`requirements` applies to the bash and python providers: in a docker workflow, add `pip install -r ' + wf.requirements + '` to `commands`');
    if (wf.python !== undefined) fail('`python` applies to the bash and python providers: a docker workflow gets its Python from `image`');
    if (wf.image === undefined) fail('the docker provider needs `image:` (for example `image: ubuntu:22.04`)');
    spec.image = wf.image;
    if (wf.entrypoint !== undefined) {
      const words = parseShell(wf.entrypoint);
      if (words.length === 0 || words.some((w) => typeof w !== 'string')) fail('`entrypoint` must be a command line such as `/bin/sh -c` (words, without pipes or redirections)');
      spec.entrypoint = words as string[];
    }
  } else {
    if (wf.image !== undefined) spec.image = wf.image;
    if (wf.entrypoint !== undefined) fail('`entrypoint` applies to `provider: docker`');
  }
  if (Array.isArray(wf.ports)) {
    if (new Set(wf.ports).size !== wf.ports.length) fail('`ports` lists a port twice');
    spec.fixedPorts = [...wf.ports];
  }
  if (wf.max_duration !== undefined && durationSeconds(wf.max_duration) > 0) spec.maxDurationS = durationSeconds(wf.max_duration);
  if (isServerProvider(wf.provider)) {
    const idle = wf.idle_duration === undefined ? DEFAULT_IDLE_DURATION_S : durationSeconds(wf.idle_duration);
    if (idle > 0) spec.idleDurationS = idle;
  } else if (wf.idle_duration !== undefined) {
    fail('`idle_duration` applies to dev environments (provider code, lab or notebook): use `max_duration` to limit any run');
  }
  if (spec.fixedPorts || spec.maxDurationS !== undefined || spec.idleDurationS !== undefined || isServerProvider(wf.provider)) spec.specVersion = 4;
  if (wf.provider === 'docker') spec.specVersion = 5;
  return spec;
}

/** The shell lines a provider runs: setup (`before_run`), then its own commands; the agent installs `requirements` before them. */
function providerCommands(wf: ParsedWorkflow, args: string[], fail: (m: string) => never): string[] {
  const lines: string[] = [];
  lines.push(...(wf.before_run ?? []), ...(wf.setup ?? []));
  switch (wf.provider) {
    case 'python': {
      if (!wf.file) fail('the python provider needs `file:` (the script to run)');
      const fileArgs = wf.args === undefined ? args.map(shellQuote).join(' ') : typeof wf.args === 'string' ? wf.args : wf.args.map(shellQuote).join(' ');
      lines.push(`python ${shellQuote(wf.file ?? '')}${fileArgs ? ` ${fileArgs}` : ''}`);
      break;
    }
    case 'bash':
      if (!wf.commands || wf.commands.length === 0) fail('the bash provider needs `commands:`');
      lines.push(...(wf.commands ?? []));
      break;
    default:
      lines.push(...(wf.commands ?? []));
  }
  return lines;
}

/** `K=V` items set a value; a bare `K` takes the submitting shell's value (and is left out if unset there). */
export function parseEnv(env: ParsedWorkflow['env'], shellEnv: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  if (env === undefined) return out;
  if (!Array.isArray(env)) {
    for (const [k, v] of Object.entries(env)) out[k] = String(v);
    return out;
  }
  for (const item of env) {
    const eq = item.indexOf('=');
    if (eq >= 0) out[item.slice(0, eq)] = item.slice(eq + 1);
    else if (shellEnv[item] !== undefined) out[item] = shellEnv[item] ?? '';
  }
  return out;
}

function parseDep(d: NonNullable<ParsedWorkflow['deps']>[number], fail: (m: string) => never): DepSpec {
  const [kind, raw, mount] =
    typeof d === 'string' ? (d.startsWith(':') ? (['tag', d.slice(1), false] as const) : (['workflow', d, false] as const))
    : 'tag' in d ? (['tag', d.tag, d.mount ?? false] as const)
    : (['workflow', d.workflow, d.mount ?? false] as const);
  const parts = raw.split('/');
  if (parts.length !== 1 && parts.length !== 3) fail(`dep \`${raw}\` must be NAME or OWNER/REPO/NAME`);
  const name = parts[parts.length - 1] ?? raw;
  if (name === '') fail(`dep \`${raw}\` has an empty name`);
  return parts.length === 3 ? { kind, name, repo: parts.slice(0, 2).join('/'), mount } : { kind, name, mount };
}

function parseResources(wf: ParsedWorkflow): ResourceSpec {
  const r = wf.resources ?? {};
  const out: ResourceSpec = { interruptible: r.interruptible ?? false, local: r.local ?? false };
  if (r.cpu !== undefined) out.cpu = r.cpu;
  if (r.memory !== undefined) out.memoryMiB = sizeMiB(r.memory);
  if (r.shm_size !== undefined) out.shmSizeMiB = sizeMiB(r.shm_size);
  if (typeof r.gpu === 'number') {
    if (r.gpu > 0) out.gpu = { count: r.gpu };
  } else if (r.gpu !== undefined) {
    out.gpu = { count: r.gpu.count ?? 1 };
    if (r.gpu.name !== undefined) out.gpu.name = r.gpu.name;
    if (r.gpu.memory !== undefined) out.gpu.memoryMiB = sizeMiB(r.gpu.memory);
  }
  return out;
}

/** Converts `64GB`, `512MB`, `16GiB` (dstack reads GB as GiB) or a byte count to MiB. */
export function sizeMiB(value: string | number): number {
  if (typeof value === 'number') return Math.ceil(value / 2 ** 20);
  const m = SIZE_PATTERN.exec(value);
  const n = Number(m?.[1] ?? 0);
  const unit = (m?.[2] ?? 'B').toUpperCase().replace('I', '').replace(/B$/, '');
  const power = { '': 0, K: 1, M: 2, G: 3, T: 4 }[unit] ?? 0;
  return Math.ceil((n * 1024 ** power) / 2 ** 20);
}

/** Quotes a word for bash only when it needs it. */
export function shellQuote(s: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const VARIABLE = /\$\{\{\s*(run\.args|run\.name)\s*\}\}/g;

/** Replaces the `${{ run.* }}` variables that `ctx` names in every string of a value; others stay. */
export function substitute<T>(value: T, ctx: Record<string, string>): T {
  if (typeof value === 'string') return value.replace(VARIABLE, (whole, name: string) => ctx[name] ?? whole) as T;
  if (Array.isArray(value)) return value.map((v: unknown) => substitute(v, ctx)) as T;
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, ctx)])) as T;
  }
  return value;
}
