import { z } from 'zod';
import { PROVIDERS } from '../spec/schema.js';
import type { JobSpec } from '../spec/job-spec.js';

/**
 * The job spec as it crosses the queue, from the CLI to an agent. `pinnedDeps` and `cache` came after
 * the first version 1 specs, so they default; unknown fields (from a newer CLI) are dropped, which is
 * why a newer CLI that adds meaning bumps `specVersion` instead.
 */
const ArtifactSpecSchema = z.object({ path: z.string(), mount: z.boolean() });

const DepSpecSchema = z.object({ kind: z.enum(['workflow', 'tag']), name: z.string(), repo: z.string().optional(), mount: z.boolean() });

const PinnedDepSchema = z.object({
  kind: z.enum(['workflow', 'tag']),
  name: z.string(),
  repoId: z.string(),
  runName: z.string(),
  artifacts: z.array(z.object({ path: z.string(), manifestSha: z.string() })),
});

const ResourceSpecSchema = z.object({
  cpu: z.number().optional(),
  memoryMiB: z.number().optional(),
  gpu: z.object({ count: z.number(), name: z.string().optional(), memoryMiB: z.number().optional() }).optional(),
  shmSizeMiB: z.number().optional(),
  interruptible: z.boolean(),
  local: z.boolean(),
});

const CodeRefSchema = z.object({
  commit: z.string().nullable(),
  branch: z.string().nullable(),
  remoteUrl: z.string().nullable(),
  archiveKey: z.string().nullable(),
  diffKey: z.string().nullable(),
  diffSha256: z.string().nullable(),
  untrackedKey: z.string().nullable(),
  untrackedSha256: z.string().nullable(),
});

export const JobSpecSchema = z.object({
  specVersion: z.union([z.literal(1), z.literal(2), z.literal(3), z.literal(4), z.literal(5)]),
  repoId: z.string().min(1),
  runName: z.string().min(1),
  jobId: z.string(),
  workflow: z.string(),
  provider: z.enum(PROVIDERS),
  commands: z.array(z.string()),
  python: z.string().optional(),
  requirements: z.string().optional(),
  env: z.record(z.string(), z.string()),
  runSecrets: z.array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/)).optional(),
  secretNames: z.array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/)).optional(),
  workingDir: z.string(),
  artifacts: z.array(ArtifactSpecSchema),
  deps: z.array(DepSpecSchema),
  pinnedDeps: z.array(PinnedDepSchema).default([]),
  portCount: z.number().int().min(0),
  fixedPorts: z.array(z.number().int().min(1).max(65535)).optional(),
  maxDurationS: z.number().positive().optional(),
  idleDurationS: z.number().positive().optional(),
  sshKey: z.string().regex(/^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256) [A-Za-z0-9+/=]+( .*)?$/).optional(),
  image: z.string().optional(),
  entrypoint: z.array(z.string()).min(1).optional(),
  resources: ResourceSpecSchema,
  runArgs: z.array(z.string()),
  code: CodeRefSchema,
  submittedAt: z.string(),
  cache: z.boolean().default(false),
  cacheKey: z.string().optional(),
});

/** The spec versions the schema reads, for the agent's check before anything else is trusted. */
export const KNOWN_SPEC_VERSIONS: ReadonlySet<number> = new Set([1, 2, 3, 4, 5]);

/** Parses a job spec whose version is known; the problems (`path: message`, at most 3) if it is not one. */
export function parseJobSpec(value: unknown): { spec: JobSpec } | { problems: string } {
  const parsed = JobSpecSchema.safeParse(value);
  if (parsed.success) return { spec: parsed.data satisfies JobSpec };
  return { problems: parsed.error.issues.slice(0, 3).map((i) => `${i.path.length > 0 ? i.path.join('.') : '(spec)'}: ${i.message}`).join('; ') };
}
