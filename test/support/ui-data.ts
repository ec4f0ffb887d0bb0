import type { Store } from '../../common/ports.js';
import { endedFacts } from '../../common/run-cost.js';
import { runKeys, settleRun, type AttemptRecord, type FinalRecord, type RunRecord } from '../../common/runs.js';
import { submittedKey } from '../../common/run-index.js';
import { bashSpec } from './job-spec.js';
import type { ListOptions, ObjectInfo } from '../../common/ports.js';
import type { Readable } from 'node:stream';

/** The machine offers of a GPU profile: what cost is computed from. */
export const GPU_PLACEMENT: NonNullable<RunRecord['placement']> = {
  profileId: 'gpu',
  offers: [
    { instanceType: 'g5.xlarge', market: 'spot', pricePerHour: 0.5, vcpus: 4, memoryMiB: 16384, gpu: { name: 'A10G', count: 1, memoryMiB: 24576 } },
    { instanceType: 'g5.xlarge', market: 'on-demand', pricePerHour: 1.2, vcpus: 4, memoryMiB: 16384, gpu: { name: 'A10G', count: 1, memoryMiB: 24576 } },
  ],
};

export interface SeedRun {
  runName: string;
  workflow?: string;
  submittedAt: string;
  owner?: string;
  tag?: string;
  placement?: RunRecord['placement'];
}

/** Writes a run's record and submitted index key, as `dstack run` does. */
export async function seedRun(store: Store, repoId: string, r: SeedRun): Promise<RunRecord> {
  const workflow = r.workflow ?? 'train';
  const record: RunRecord = {
    runName: r.runName,
    repoId,
    workflow,
    jobId: `job-${r.runName}`,
    submittedAt: r.submittedAt,
    maxAttempts: 3,
    spec: bashSpec(['true'], { repoId, runName: r.runName, workflow }),
    overrides: [],
    toolVersion: 'test',
    ...(r.owner ? { owner: r.owner } : {}),
    ...(r.tag ? { tag: r.tag } : {}),
    ...(r.placement ? { placement: r.placement } : {}),
  };
  await store.put(runKeys.record(repoId, r.runName), JSON.stringify(record));
  await store.put(submittedKey(repoId, record), '');
  return record;
}

/** An attempt on an instance (EC2) or a local agent, running (no end) or ended. */
export function attemptOf(n: number, startedAt: string, o: { endedAt?: string; instance?: AttemptRecord['instance']; leaseMs?: number } = {}): AttemptRecord {
  return {
    attempt: n,
    agentId: `agent-${n}`,
    host: 'box',
    startedAt,
    heartbeatAt: o.endedAt ?? startedAt,
    leaseMs: o.leaseMs ?? 3_600_000,
    state: o.endedAt ? 'ended' : 'running',
    ...(o.endedAt ? { endedAt: o.endedAt } : {}),
    ...(o.instance ? { instance: o.instance } : {}),
  };
}

/** Writes an attempt record, as the agent does. */
export async function seedAttempt(store: Store, repoId: string, runName: string, a: AttemptRecord): Promise<void> {
  await store.put(runKeys.attempt(repoId, runName, a.attempt), JSON.stringify(a));
}

/** Ends a run as its settler does: final record and ended index key with its facts. */
export async function seedEnd(store: Store, repoId: string, record: RunRecord, attempts: AttemptRecord[], final: FinalRecord): Promise<void> {
  await settleRun(store, repoId, record.runName, final, endedFacts({ record, attempts }, final));
}

/** A Store that records the keys read and the listings made, to show what looking costs. */
export class CountingStore implements Store {
  gets: string[] = [];
  lists: Array<{ prefix: string; startAfter?: string }> = [];
  constructor(private readonly inner: Store) {}
  reset(): void {
    this.gets = [];
    this.lists = [];
  }
  put(key: string, body: string | Buffer, o?: { ifAbsent?: boolean }): Promise<void> {
    return this.inner.put(key, body, o);
  }
  head(key: string): Promise<ObjectInfo | undefined> {
    this.gets.push(key);
    return this.inner.head(key);
  }
  get(key: string): Promise<Buffer | undefined> {
    this.gets.push(key);
    return this.inner.get(key);
  }
  putStream(key: string, body: Readable, o?: { sizeBytes?: number }): Promise<void> {
    return this.inner.putStream(key, body, o);
  }
  getStream(key: string): Promise<Readable> {
    this.gets.push(key);
    return this.inner.getStream(key);
  }
  list(prefix: string, o: ListOptions = {}): Promise<ObjectInfo[]> {
    this.lists.push({ prefix, ...(o.startAfter === undefined ? {} : { startAfter: o.startAfter }) });
    return this.inner.list(prefix, o);
  }
  delete(keys: string[]): Promise<void> {
    return this.inner.delete(keys);
  }
  touch(key: string): Promise<boolean> {
    return this.inner.touch(key);
  }
}
