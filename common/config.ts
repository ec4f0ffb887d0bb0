import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LineCounter, parseDocument, isMap, isSeq, type Node } from 'yaml';
import { z } from 'zod';
import { ConfigError, errnoCode, formatProblem } from './errors.js';

/** Where jobs run and state lives. */
export const BACKENDS = ['local', 'aws'] as const;
/** Backend aws: who runs the agents (see `aws.agents`). */
export const AGENT_MODES = ['ec2', 'local', 'none'] as const;
/** `local.sandbox`: `auto` runs local jobs under bubblewrap when it works, `off` never. */
export const SANDBOX_MODES = ['auto', 'off'] as const;

const LocalSchema = z.strictObject({
  /** Local agents (and so jobs) that may run at once. */
  maxParallelJobs: z.number().int().min(1).max(64).default(2),
  /** An idle local agent exits after this long. */
  agentIdleTimeoutSec: z.number().min(1).default(300),
  /** Lease on a received job; the agent renews it while the job runs. */
  visibilityTimeoutSec: z.number().min(1).max(43200).default(30),
  /** Deliveries of a job before it is given up (and dead-lettered). */
  maxAttempts: z.number().int().min(1).max(100).default(3),
  /** Between SIGTERM and SIGKILL when a job is stopped. */
  stopGraceSec: z.number().min(0).max(3600).default(10),
  /** How often `mount: true` artifacts are saved while a job runs. */
  artifactSyncSec: z.number().min(1).max(3600).default(30),
  /** `dstack run` warns, naming the biggest, when the untracked files it uploads add up to more than this. */
  untrackedWarnBytes: z.number().int().min(0).default(100 * 1024 * 1024),
  /**
   * Local jobs run under bubblewrap: `auto` when `bwrap` is installed and works, `off` never. The
   * sandbox hides ~/.aws, ~/.ssh, DSTACK_HOME and other jobs' folders, and keeps the host read-only.
   */
  sandbox: z.enum(SANDBOX_MODES).default('auto'),
  /** The code-server binary for `provider: code`, when it is not on PATH. */
  codeServer: z.string().min(1).optional(),
});

/** `aws.sshPort`'s default: the port EC2 agents serve SSH on (not 22, which the image's own sshd may hold). */
export const DEFAULT_SSH_PORT = 10022;

const AwsSchema = z.strictObject({
  region: z.string().min(1).default('us-east-1'),
  profile: z.string().min(1).optional(),
  bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'expected an S3 bucket name (lowercase letters, digits, dots, dashes)').optional(),
  /** Queues are `<queuePrefix>-jobs` and `<queuePrefix>-jobs-dlq`. */
  queuePrefix: z.string().regex(/^[A-Za-z0-9_-]{1,60}$/).default('dstack'),
  subnet: z.string().min(1).optional(),
  /**
   * For S3-compatible stores and emulators; `sts` answers GetCallerIdentity, which names the owner of
   * runs; `secretsmanager` keeps the secrets.
   */
  endpoints: z.strictObject({ sqs: z.url().optional(), s3: z.url().optional(), sts: z.url().optional(), secretsmanager: z.url().optional() }).optional(),
  /**
   * The first segment of the names of the secrets in Secrets Manager (see common/aws/secrets-manager.ts);
   * by default the queue prefix. EC2 agents get it in their user-data, where `queuePrefix` is their profile's.
   */
  secretsPrefix: z.string().regex(/^[A-Za-z0-9_-]{1,60}$/).optional(),
  /** SQS's 12-hour visibility cap; a lease near it is handed over (see SqsQueue). Lower only to test the hand-over. */
  visibilityCapSec: z.number().int().min(5).max(43200).default(43200),
  /** The most EC2 instances the fleet may run. */
  maxInstances: z.number().int().min(0).max(1000).default(4),
  /**
   * Who runs the agents: `ec2` (a spot or on-demand fleet the coordinator scales), `local` (agents
   * as local processes, as in the local backend: AWS transports without EC2), or `none` (agents are
   * started by something else, e.g. instances launched by hand from the AMI).
   */
  agents: z.enum(AGENT_MODES).default('ec2'),
  /** The agent AMI; by default the newest image tagged `dstack:role=agent` owned by this account. */
  ami: z.string().regex(/^ami-[0-9a-f]+$/, 'expected an AMI id (ami-…)').optional(),
  /** Instance profile (name or ARN) for the agents: it needs the agent policy in ami/iam/. */
  instanceProfile: z.string().min(1).optional(),
  /** Security groups for the agents (default: the VPC's default group). */
  securityGroups: z.array(z.string().regex(/^sg-[0-9a-f]+$/, 'expected a security group id (sg-…)')).optional(),
  /**
   * EC2 jobs may use the agents' instance role through IMDS. Off (the default), the agent image runs
   * jobs as an unprivileged user that its firewall keeps off IMDS.
   */
  jobInstanceRole: z.boolean().default(false),
  /**
   * The port EC2 agents serve SSH on (`dstack ssh`, the forwards to a job's ports): public-key only,
   * for the run's submitter. 0: no SSH endpoint.
   */
  sshPort: z.number().int().min(0).max(65535).default(DEFAULT_SSH_PORT),
  /**
   * Who may reach that port: the fleet's security group opens it to these CIDRs only. `dstack config`
   * sets it to the caller's public address as a /32.
   */
  allowedCidrs: z.array(z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$|^[0-9a-fA-F:]+\/\d{1,3}$/, 'expected a CIDR (203.0.113.7/32)')).optional(),
});

export const ConfigSchema = z.strictObject({
  backend: z.enum(BACKENDS).default('local'),
  /** Agent settings (leases, attempts, grace, artifact sync); they apply to both backends. */
  local: LocalSchema.default(() => LocalSchema.parse({})),
  aws: AwsSchema.optional(),
});

export type AwsConfig = z.output<typeof AwsSchema>;

/** The 2022 environment overrides of the AWS settings. */
export const AWS_ENV_OVERRIDES = {
  DSTACK_AWS_S3_BUCKET: 'bucket',
  DSTACK_AWS_REGION: 'region',
  DSTACK_AWS_PROFILE: 'profile',
  DSTACK_AWS_EC2_SUBNET: 'subnet',
} as const;

export type DstackConfig = z.output<typeof ConfigSchema> & {
  /** The dstack home directory (`~/.dstack` unless DSTACK_HOME says otherwise). */
  home: string;
};

/** Reads `<home>/config.yaml` (optional) and applies the DSTACK_AWS_* overrides from `env`. Problems are `file:line:col: message`. */
export async function loadConfig(home: string, env: Record<string, string | undefined> = {}): Promise<DstackConfig> {
  return applyEnv(await readConfigFile(home), env);
}

/**
 * Parses config YAML that did not come from `<home>/config.yaml` (an agent's EC2 user-data, say);
 * `source` names it in problems. The DSTACK_AWS_* overrides from `env` apply as for a file.
 */
export function parseConfig(text: string, source: string, home: string, env: Record<string, string | undefined> = {}): DstackConfig {
  return applyEnv(parseConfigText(text, source, home), env);
}

function applyEnv(config: DstackConfig, env: Record<string, string | undefined>): DstackConfig {
  const overrides = Object.entries(AWS_ENV_OVERRIDES).filter(([name]) => env[name]);
  if (overrides.length > 0) {
    const aws = AwsSchema.parse({ ...(config.aws ?? {}), ...Object.fromEntries(overrides.map(([name, key]) => [key, env[name]])) });
    config.aws = aws;
  }
  return config;
}

async function readConfigFile(home: string): Promise<DstackConfig> {
  const file = join(home, 'config.yaml');
  let text = '';
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw new ConfigError(`cannot read ${file}: ${(e as Error).message}`);
  }
  return parseConfigText(text, file, home);
}

function parseConfigText(text: string, file: string, home: string): DstackConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  if (doc.errors[0]) {
    const pos = doc.errors[0].linePos?.[0] ?? { line: 1, col: 1 };
    throw new ConfigError(formatProblem({ file, ...pos, message: `invalid YAML: ${doc.errors[0].message.split('\n')[0] ?? ''}` }));
  }
  const result = ConfigSchema.safeParse(doc.toJS() ?? {});
  if (!result.success) {
    const lines2 = result.error.issues.map((issue) => {
      const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
      let node: unknown = doc.contents;
      for (const seg of path) node = isMap(node) || isSeq(node) ? node.get(seg, true) : node;
      const pos = lines.linePos((node as Node | null)?.range?.[0] ?? 0);
      return formatProblem({ file, line: pos.line, col: pos.col, message: `\`${path.join('.')}\`: ${issue.message}` });
    });
    throw new ConfigError(lines2.join('\n'));
  }
  return { ...result.data, home };
}
