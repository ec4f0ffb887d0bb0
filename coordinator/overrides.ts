import { posix } from 'node:path';
import { UsageError } from '../common/errors.js';
import { parseEnv, sizeMiB, type DepSpec, type JobSpec } from '../common/spec/job-spec.js';
import { ARTIFACT_PATH_RULE, SIZE_PATTERN, normalizeArtifactPath } from '../common/spec/schema.js';

/** Per-run overrides, as 0.0.14 took them after the workflow name. */
export interface Overrides {
  env: string[];
  artifacts: string[];
  deps: string[];
  workingDir?: string;
  cpu?: number;
  memory?: string;
  gpu?: number;
  gpuName?: string;
  gpuMemory?: string;
  shmSize?: string;
  interruptible?: boolean;
}

/** Returns a copy of the spec with the overrides applied; bad values are a UsageError naming the flag. */
export function applyOverrides(spec: JobSpec, o: Overrides, shellEnv: Record<string, string | undefined>): JobSpec {
  const out: JobSpec = structuredClone(spec);
  for (const item of o.env) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*(=[\s\S]*)?$/.test(item)) throw new UsageError(`-e ${item}: use -e NAME=VALUE (or -e NAME to pass your shell's value)`);
  }
  Object.assign(out.env, parseEnv(o.env, shellEnv));
  for (const raw of o.artifacts) {
    const path = normalizeArtifactPath(raw);
    if (path === undefined) throw new UsageError(`-a ${raw}: the artifact path ${ARTIFACT_PATH_RULE}`);
    out.artifacts.push({ path, mount: false });
  }
  for (const dep of o.deps) out.deps.push(parseDepFlag(dep));
  if (o.workingDir !== undefined) {
    const dir = posix.normalize(o.workingDir);
    if (dir.startsWith('..') || posix.isAbsolute(dir)) throw new UsageError(`-w ${o.workingDir}: the working dir must be a path inside the repo`);
    out.workingDir = dir;
  }
  const size = (flag: string, v: string): number => {
    if (!SIZE_PATTERN.test(v)) throw new UsageError(`${flag} ${v}: use a size such as 16GB or 512MB`);
    return sizeMiB(v);
  };
  const r = out.resources;
  if (o.cpu !== undefined) r.cpu = positive('--cpu', o.cpu);
  if (o.memory !== undefined) r.memoryMiB = size('--memory', o.memory);
  if (o.shmSize !== undefined) r.shmSizeMiB = size('--shm-size', o.shmSize);
  if (o.interruptible) r.interruptible = true;
  if (o.gpu === 0) {
    // No GPU: a GPU workflow run on a machine that has none (a CPU smoke test, say).
    if (o.gpuName !== undefined || o.gpuMemory !== undefined) throw new UsageError('--gpu 0 asks for no GPU: drop --gpu-name and --gpu-memory, or ask for one or more GPUs');
    delete r.gpu;
  } else if (o.gpu !== undefined || o.gpuName !== undefined || o.gpuMemory !== undefined) {
    const gpu = { ...(r.gpu ?? { count: 1 }) };
    if (o.gpu !== undefined) {
      if (!Number.isFinite(o.gpu) || o.gpu < 0) throw new UsageError(`--gpu ${o.gpu}: use 0 (no GPU) or a positive number`);
      gpu.count = o.gpu;
    }
    if (o.gpuName !== undefined) gpu.name = o.gpuName;
    if (o.gpuMemory !== undefined) gpu.memoryMiB = size('--gpu-memory', o.gpuMemory);
    r.gpu = gpu;
  }
  return out;
}

function positive(flag: string, n: number): number {
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} ${n}: use a positive number`);
  return n;
}

/** `--dep :TAG` or `--dep WORKFLOW` (or OWNER/REPO/WORKFLOW). */
function parseDepFlag(value: string): DepSpec {
  const [kind, raw] = value.startsWith(':') ? (['tag', value.slice(1)] as const) : (['workflow', value] as const);
  const parts = raw.split('/');
  const name = parts[parts.length - 1] ?? '';
  if (name === '' || (parts.length !== 1 && parts.length !== 3)) throw new UsageError(`--dep ${value}: use --dep :TAG or --dep WORKFLOW`);
  return parts.length === 3 ? { kind, name, repo: parts.slice(0, 2).join('/'), mount: false } : { kind, name, mount: false };
}
