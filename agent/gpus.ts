import type { ResourceSpec } from '../common/spec/job-spec.js';

/** GPUs held for one attempt: their `nvidia-smi` indices, until `release`. */
export interface GpuGrant {
  indices: number[];
  release(): Promise<void>;
}

/**
 * The GPUs of this machine, shared by the agents on it: each job that asks for GPUs gets its own.
 * `acquire` waits (saying so through `say`) while other jobs hold them, fails with a JobFailedError
 * when this machine can never serve the request, and rejects with `signal.reason` when aborted.
 */
export interface GpuPool {
  acquire(want: NonNullable<ResourceSpec['gpu']>, holder: string, signal: AbortSignal, say: (line: string) => void): Promise<GpuGrant>;
}
