import { access, constants } from 'node:fs/promises';
import { delimiter, isAbsolute, join } from 'node:path';
import { exec, onPath } from './exec.js';

export { onPath };

/** One GPU as `nvidia-smi` lists it. */
export interface Gpu {
  index: number;
  name: string;
  memoryMiB: number;
}

/**
 * The GPUs `nvidia-smi` lists; none when it is not on `path` or fails (no driver loaded).
 * Both the CLI's submit-time check and the agent's pool read them this way, through the PATH each runs with.
 */
export async function listGpus(path: string): Promise<Gpu[]> {
  const smi = await onPath('nvidia-smi', path);
  if (smi === undefined) return [];
  const r = await exec(smi, ['--query-gpu=index,name,memory.total', '--format=csv,noheader,nounits'], { env: { PATH: path } }).catch(() => undefined);
  if (r === undefined || r.code !== 0) return [];
  const gpus: Gpu[] = [];
  for (const line of r.stdout.toString('utf8').split('\n')) {
    const [index, name, memory] = line.split(',').map((c) => c.trim());
    if (index === undefined || name === undefined || memory === undefined || !/^\d+$/.test(index) || !/^\d+$/.test(memory)) continue;
    gpus.push({ index: Number(index), name, memoryMiB: Number(memory) });
  }
  return gpus;
}

/** `A10G` matches `NVIDIA A10G`, `v100` matches `Tesla V100-SXM2-16GB`. */
export function gpuNameMatches(have: string, want: string): boolean {
  return have.toLowerCase().includes(want.toLowerCase());
}

/** `NVIDIA A10G` → `A10G`, `Tesla V100-SXM2-16GB` → `V100-SXM2-16GB`. */
export function shortGpuName(name: string): string {
  return name.replace(/^(NVIDIA|Tesla)\s+/i, '').split(/\s+/)[0] ?? name;
}

/** The GPUs that can serve a request: those whose name matches `want.name` and with at least `want.memoryMiB`. */
export function gpusFitting(gpus: Gpu[], want: { name?: string | undefined; memoryMiB?: number | undefined }): Gpu[] {
  return gpus.filter((g) => (want.name === undefined || gpuNameMatches(g.name, want.name)) && (want.memoryMiB === undefined || g.memoryMiB >= want.memoryMiB));
}

/** `2 × NVIDIA A10G, 23028 MiB (0, 1)`, `1 × Tesla T4, 15360 MiB (0) and 1 × NVIDIA A10G, 23028 MiB (1)`, or `no GPU`. */
export function describeGpus(gpus: Gpu[]): string {
  if (gpus.length === 0) return 'no GPU';
  const groups = new Map<string, number[]>();
  for (const g of gpus) {
    const key = `${g.name}, ${g.memoryMiB} MiB`;
    groups.set(key, [...(groups.get(key) ?? []), g.index]);
  }
  const parts = [...groups].map(([key, indices]) => `${indices.length} × ${key} (${indices.join(', ')})`);
  return parts.length <= 1 ? (parts[0] ?? '') : `${parts.slice(0, -1).join(', ')} and ${parts.at(-1) ?? ''}`;
}

