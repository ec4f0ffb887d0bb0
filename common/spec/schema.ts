import { posix } from 'node:path';
import { z } from 'zod';

/** The providers a workflow may name. */
export const PROVIDERS = ['bash', 'python', 'docker', 'code', 'lab', 'notebook'] as const;
export type ProviderName = (typeof PROVIDERS)[number];
/** The providers this version's agents run; the others are accepted in workflows (and `--dry-run`) but refused at `dstack run`. */
export const RUNNABLE_PROVIDERS: readonly ProviderName[] = ['bash', 'python', 'docker', 'code', 'lab', 'notebook'];
/** The providers that serve a dev environment: the agent starts the server and publishes its link. */
export const SERVER_PROVIDERS = ['code', 'lab', 'notebook'] as const;
export type ServerProvider = (typeof SERVER_PROVIDERS)[number];
export function isServerProvider(p: ProviderName): p is ServerProvider {
  return (SERVER_PROVIDERS as readonly string[]).includes(p);
}

/** `30m`, `2h`, `45s`, `1d`, or seconds as a number; `0` means never. */
export const DURATION_PATTERN = /^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$/i;
/** The longest `idle_duration` or `max_duration`: a year. */
export const MAX_DURATION_S = 365 * 86400;
const duration = z
  .union([z.number().nonnegative(), z.string().regex(DURATION_PATTERN, 'expected a duration such as 30m, 2h or 90 (seconds)')], {
    error: 'expected a duration such as 30m, 2h or 90 (seconds)',
  })
  .refine((v) => Number.isFinite(durationSeconds(v)) && durationSeconds(v) <= MAX_DURATION_S, { error: 'expected a duration of at most a year (365d)' });

/** A duration field's value in seconds. */
export function durationSeconds(value: string | number): number {
  if (typeof value === 'number') return Math.ceil(value);
  const m = DURATION_PATTERN.exec(value);
  const n = Number(m?.[1] ?? 0);
  const unit = (m?.[2] ?? 's').toLowerCase();
  const seconds = n * ({ s: 1, m: 60, h: 3600, d: 86400 }[unit] ?? 1);
  // Up to the next whole second: `0.4` is not `0` (never).
  return Math.ceil(seconds);
}

/** Commands: a list of lines, or one (multi-line) string. */
const commandList = z
  .union([z.string(), z.array(z.string())], { error: 'expected a string or a list of strings' })
  .transform((v) => (typeof v === 'string' ? [v] : v));

/** A version such as `3.10`. YAML reads an unquoted 3.10 as the float 3.1; the loader keeps the source text. */
const version = z
  .union([z.string(), z.number()], { error: 'expected a version such as 3.10' })
  .transform((v) => String(v));

/** Sizes such as `64GB`, `512MB`, `16GiB` or a number of bytes. */
export const SIZE_PATTERN = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$/i;
const size = z.union([z.number().nonnegative(), z.string().regex(SIZE_PATTERN, 'expected a size such as 16GB or 512MB')], {
  error: 'expected a size such as 16GB or 512MB',
});

const envItem = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*(=[\s\S]*)?$/, 'expected K=V or K, where K is a variable name');
const env = z.union(
  [z.array(envItem), z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.union([z.string(), z.number(), z.boolean()]))],
  { error: 'expected a list of K=V items' },
);

/**
 * An artifact path as a job spec carries it: `./`, `a/../b` and a trailing `/` folded away; undefined
 * when a relative path climbs out of the working dir. Absolute paths stay absolute.
 */
export function normalizeArtifactPath(raw: string): string | undefined {
  if (raw.length === 0 || raw.includes('\0')) return undefined;
  const p = posix.normalize(raw);
  const trimmed = p.length > 1 ? p.replace(/\/+$/, '') : p;
  if (!posix.isAbsolute(trimmed) && (trimmed === '..' || trimmed.startsWith('../'))) return undefined;
  return trimmed;
}

/** Why an artifact path was refused, for the workflow file and the `-a` flag alike. */
export const ARTIFACT_PATH_RULE = 'climbs out of the working dir: use a path inside it (no `..` leading out), or an absolute path';

const artifactPath = z
  .string()
  .min(1)
  .refine((p) => normalizeArtifactPath(p) !== undefined, { error: (issue) => `artifact \`${String(issue.input)}\` ${ARTIFACT_PATH_RULE}` });

const artifact = z.union(
  [artifactPath, z.strictObject({ path: artifactPath, mount: z.boolean().optional() })],
  { error: 'expected a path, or {path, mount}' },
);

const dep = z.union(
  [
    z.string().min(1),
    z.strictObject({ workflow: z.string().min(1), mount: z.boolean().optional() }),
    z.strictObject({ tag: z.string().min(1), mount: z.boolean().optional() }),
  ],
  { error: 'expected `workflow: NAME`, `tag: NAME`, or a string (":tag" or "workflow")' },
);

const gpu = z.union(
  [
    z.number().int().nonnegative(),
    z.strictObject({
      count: z.number().int().positive().optional(),
      name: z.string().min(1).optional(),
      memory: size.optional(),
    }),
  ],
  { error: 'expected a GPU count, or {count, name, memory}' },
);

const resources = z.strictObject({
  cpu: z.number().positive().optional(),
  memory: size.optional(),
  gpu: gpu.optional(),
  shm_size: size.optional(),
  interruptible: z.boolean().optional(),
  local: z.boolean().optional(),
});

/** One entry of the `workflows:` list, as users write it (the 2022 open-source format). */
export const WorkflowSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'expected a name of letters, digits, ".", "_" or "-"'),
  provider: z.enum(PROVIDERS, { error: `expected one of: ${PROVIDERS.join(', ')}` }),
  help: z.string().optional(),
  commands: commandList.optional(),
  before_run: commandList.optional(),
  setup: commandList.optional(),
  python: version.optional(),
  version: version.optional(),
  file: z.string().min(1).optional(),
  args: z.union([z.string(), z.array(z.string())], { error: 'expected a string or a list of strings' }).optional(),
  requirements: z.string().min(1).optional(),
  env: env.optional(),
  working_dir: z.string().min(1).optional(),
  artifacts: z.array(artifact, { error: 'expected a list of artifacts' }).optional(),
  deps: z.array(dep, { error: 'expected a list of deps' }).optional(),
  ports: z.union([z.number().int().min(0).max(16), z.array(z.number().int().min(1).max(65535))], {
    error: 'expected a number of ports such as 1',
  }).optional(),
  image: z.string().min(1).optional(),
  entrypoint: z.string().optional(),
  resources: resources.optional(),
  cache: z.boolean().optional(),
  /** Dev environments (code, lab, notebook): stop after this long with no open connection (default 60m; 0: never). */
  idle_duration: duration.optional(),
  /** Any workflow: stop the run when it has run longer than this (default: no limit). */
  max_duration: duration.optional(),
});

/** The whole `workflows.yaml` file. */
export const WorkflowsFileSchema = z.strictObject({
  workflows: z.array(z.unknown(), { error: 'expected a list of workflows under `workflows:`' }),
});

/** A workflow as written (input side of the schema). */
export type WorkflowInput = z.input<typeof WorkflowSchema>;
/** A workflow after parsing: commands always lists, versions always strings. */
export type ParsedWorkflow = z.output<typeof WorkflowSchema>;

/** The JSON Schema that editors use (yaml-language-server) for `.dstack/workflows.yaml`. */
export function workflowsJsonSchema(): Record<string, unknown> {
  const file = z.strictObject({ workflows: z.array(WorkflowSchema) }).describe('dstack workflows file (.dstack/workflows.yaml)');
  return z.toJSONSchema(file, { io: 'input' });
}
