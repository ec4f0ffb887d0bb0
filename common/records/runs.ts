import { z } from 'zod';
import type { JobSpec } from '../spec/job-spec.js';

/**
 * The run's records as they cross from one process to another through the Store, parsed with
 * these schemas on every read. Fields added after the first release are optional or defaulted, so
 * records that older versions wrote stay readable; unknown fields (from newer versions) are dropped.
 */

export const FinalStatusSchema = z.enum(['done', 'failed', 'stopped']);
export type FinalStatus = z.infer<typeof FinalStatusSchema>;

const OfferSchema = z.object({
  instanceType: z.string(),
  market: z.enum(['spot', 'on-demand']),
  pricePerHour: z.number(),
  vcpus: z.number(),
  memoryMiB: z.number(),
  gpu: z.object({ name: z.string(), count: z.number(), memoryMiB: z.number() }).nullable(),
});

export const PlacementSchema = z.object({ profileId: z.string(), offers: z.array(OfferSchema) });

/**
 * The job spec inside a run record. Its own schema belongs to the job spec, which the agent checks
 * by `specVersion` where it takes a job; a run record only has to hold one as an object.
 */
const StoredJobSpecSchema = z.custom<JobSpec>((v) => typeof v === 'object' && v !== null && !Array.isArray(v), 'spec: expected a job spec object');

/** Written once when the run is submitted; its exclusive creation reserves the run name. */
export const RunRecordSchema = z.object({
  runName: z.string().min(1),
  repoId: z.string().min(1),
  workflow: z.string(),
  jobId: z.string(),
  submittedAt: z.string(),
  maxAttempts: z.number().int().min(1),
  /** The resolved spec: code snapshot, pinned deps and overrides included. */
  spec: StoredJobSpecSchema,
  /** Per-run overrides given on the command line, as given (absent in the first records). */
  overrides: z.array(z.string()).default([]),
  toolVersion: z.string().default('unknown'),
  /** Set by `dstack restart`: the run this one reproduces. */
  restartOf: z.string().optional(),
  /** Tag given with `run -t`. */
  tag: z.string().optional(),
  /** The profile (queue) it was sent to and the machine offers, cheapest first, for cost. */
  placement: PlacementSchema.optional(),
  /**
   * Set by submitters that write `enqueued.json` once the job is sent: such a run with neither that
   * marker nor an attempt, past a grace, was never queued (its CLI died) and is settled as failed.
   */
  marksEnqueued: z.boolean().optional(),
  /**
   * Who submitted it: on AWS the caller's ARN (STS GetCallerIdentity), locally `user@host`. Absent
   * in records written before owners existed: such a run has an unknown owner, and anyone may stop
   * or remove it.
   */
  owner: z.string().min(1).optional(),
});
export type RunRecord = z.infer<typeof RunRecordSchema>;

export const SavedArtifactRefSchema = z.object({
  /** As declared: relative to the working dir, or absolute. */
  path: z.string(),
  manifestSha: z.string(),
  files: z.number(),
  sizeBytes: z.number(),
});
export type SavedArtifactRef = z.infer<typeof SavedArtifactRefSchema>;

/** The saved artifacts of a run; written after every save, the last one when the job ends. */
export const ArtifactIndexSchema = z.object({
  artifacts: z.array(SavedArtifactRefSchema),
  savedAt: z.string(),
  /** False while a `mount: true` artifact is still being saved incrementally. */
  complete: z.boolean(),
});
export type ArtifactIndex = z.infer<typeof ArtifactIndexSchema>;

/** What the agent tells about the machine a job ran on. */
export const HostFactsSchema = z.object({
  hostname: z.string(),
  platform: z.string(),
  arch: z.string(),
  cpus: z.number(),
  memoryMiB: z.number(),
  nodeVersion: z.string(),
  agentVersion: z.string(),
});
export type HostFacts = z.infer<typeof HostFactsSchema>;

/** The EC2 instance behind an attempt, from the instance metadata service. */
export const InstanceFactsSchema = z.object({ id: z.string(), type: z.string(), market: z.enum(['spot', 'on-demand']) });
export type InstanceFacts = z.infer<typeof InstanceFactsSchema>;

export const TagRecordSchema = z.object({ tag: z.string(), runName: z.string(), createdAt: z.string() });
export type TagRecord = z.infer<typeof TagRecordSchema>;

/**
 * What a running attempt serves: the job's ports on the machine's loopback, the dev environment's
 * server, and (on EC2) the agent's SSH endpoint that forwards to them. No token: the link's token
 * is a secret of the run (DSTACK_SERVER_TOKEN in the secret store), added by whoever prints the link.
 */
export const ServiceInfoSchema = z.object({
  /** The job's ports (PORT_0…), on 127.0.0.1 of the machine; `open` once one accepts connections. */
  ports: z.array(z.object({ port: z.number().int(), open: z.boolean() })),
  /** A dev environment's server: the link is http://HOST:PORT + path + `?` + tokenParam + `=` + token. */
  server: z
    .object({
      provider: z.enum(['code', 'lab', 'notebook']),
      port: z.number().int(),
      // Checked: the CLI builds a URL from them, with the token in it.
      path: z.string().regex(/^\/[A-Za-z0-9/_.-]*$/),
      tokenParam: z.string().regex(/^[a-z][a-z-]*$/),
      /** True once the server answered the agent's HTTP probe with 200. */
      ready: z.boolean(),
    })
    .optional(),
  /** On EC2: the agent's SSH endpoint, which accepts only the run's key and forwards only to the ports above. */
  ssh: z.object({ host: z.string(), port: z.number().int(), user: z.string(), hostKey: z.string() }).optional(),
});
export type ServiceInfo = z.infer<typeof ServiceInfoSchema>;

/** One delivery of the job to an agent; written only by that agent. */
export const AttemptRecordSchema = z.object({
  attempt: z.number().int(),
  agentId: z.string(),
  host: z.string(),
  startedAt: z.string(),
  heartbeatAt: z.string(),
  /** How long after the last heartbeat the lease lapses. */
  leaseMs: z.number(),
  state: z.enum(['running', 'ended']),
  endedAt: z.string().optional(),
  hostFacts: HostFactsSchema.optional(),
  /** Set on EC2: which instance ran this attempt. */
  instance: InstanceFactsSchema.optional(),
  /** Why the attempt was handed back unfinished (a spot interruption notice). */
  interruption: z.string().optional(),
  /** Set while the job serves ports or a dev environment. */
  service: ServiceInfoSchema.optional(),
  /** The job's working folder on its machine (where `dstack ssh` opens its shell). */
  cwd: z.string().optional(),
  /**
   * `provider: docker`: the image as the workflow named it, the digest it was pulled as, and the
   * reference the container ran (`repo@sha256:…`, or the id of an image built on its machine): what `restart` runs.
   */
  image: z.object({ ref: z.string(), digest: z.string(), pinned: z.string() }).optional(),
  /** The GPUs (nvidia-smi indices) the job was given on its machine. */
  gpus: z.array(z.number().int()).optional(),
});
export type AttemptRecord = z.infer<typeof AttemptRecordSchema>;

/** The one final status of a run, created exactly once by whoever ends it. */
export const FinalRecordSchema = z.object({
  status: FinalStatusSchema,
  exitCode: z.number().int().nullable(),
  reason: z.string().nullable(),
  finishedAt: z.string(),
  attempt: z.number().int().nullable(),
  /** Set when a cached run reused the outputs of an earlier run instead of running. */
  cacheOf: z.string().optional(),
});
export type FinalRecord = z.infer<typeof FinalRecordSchema>;

export const StopRequestSchema = z.object({ abort: z.boolean(), requestedAt: z.string() });
export type StopRequest = z.infer<typeof StopRequestSchema>;

/** The rerun cache: which run's outputs a cache key stands for. */
export const CacheEntrySchema = z.object({ runName: z.string() });
export type CacheEntry = z.infer<typeof CacheEntrySchema>;
