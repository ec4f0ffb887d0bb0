import { randomBytes } from 'node:crypto';
import { mkdir, readFile, realpath, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { dirname, join } from 'node:path';
import { Document, parseDocument } from 'yaml';
import { AGENT_MODES, BACKENDS, parseConfig, type DstackConfig } from '../../common/config.js';
import { errnoCode } from '../../common/errors.js';
import type { Output } from '../output.js';

/** `dstack config` runs before (and without) a backend: it is how a broken one gets fixed. */
export interface ConfigContext {
  home: string;
  out: Output;
  env: Record<string, string | undefined>;
  /** Asks on a terminal, offering a default; undefined when there is no terminal. */
  ask?: (question: string, fallback: string) => Promise<string>;
  /** Provisions the backend of a config not yet saved (creating the bucket and queues on AWS); throws what is wrong. */
  check: (config: DstackConfig) => Promise<void>;
  /** This machine's public IP address as the internet sees it (the default of `aws.allowedCidrs`); tests inject it. */
  publicAddress?: () => Promise<string>;
}

interface ConfigFlag {
  /** Where the value goes in config.yaml. */
  path: readonly string[];
  type: 'string' | 'number';
  choices?: readonly string[];
  /** A comma-separated list, stored as a YAML list. */
  list?: true;
  describe: string;
}

/** `dstack config`'s flags, each setting one path of config.yaml; the CLI declares its options from this table. */
export const CONFIG_FLAGS = {
  backend: { path: ['backend'], type: 'string', choices: BACKENDS, describe: 'Where jobs run and state lives' },
  region: { path: ['aws', 'region'], type: 'string', describe: 'AWS region' },
  profile: { path: ['aws', 'profile'], type: 'string', describe: 'AWS profile' },
  bucket: { path: ['aws', 'bucket'], type: 'string', describe: 'S3 bucket for artifacts, logs and state' },
  'queue-prefix': { path: ['aws', 'queuePrefix'], type: 'string', describe: 'SQS queue name prefix' },
  subnet: { path: ['aws', 'subnet'], type: 'string', describe: 'EC2 subnet for the fleet' },
  'sqs-endpoint': { path: ['aws', 'endpoints', 'sqs'], type: 'string', describe: 'SQS endpoint override (emulators)' },
  's3-endpoint': { path: ['aws', 'endpoints', 's3'], type: 'string', describe: 'S3 endpoint override (S3-compatible stores, emulators)' },
  'sts-endpoint': { path: ['aws', 'endpoints', 'sts'], type: 'string', describe: 'STS endpoint override (emulators): who owns runs' },
  'secretsmanager-endpoint': { path: ['aws', 'endpoints', 'secretsmanager'], type: 'string', describe: 'Secrets Manager endpoint override (emulators)' },
  'max-instances': { path: ['aws', 'maxInstances'], type: 'number', describe: 'Most EC2 instances at once' },
  'max-parallel-jobs': { path: ['local', 'maxParallelJobs'], type: 'number', describe: 'Most local agents at once' },
  agents: { path: ['aws', 'agents'], type: 'string', choices: AGENT_MODES, describe: 'Backend aws: agents on an EC2 fleet, as local processes, or started elsewhere' },
  ami: { path: ['aws', 'ami'], type: 'string', describe: 'Agent AMI id (default: the newest dstack agent image)' },
  'instance-profile': { path: ['aws', 'instanceProfile'], type: 'string', describe: "Agents' EC2 instance profile" },
  'allowed-cidrs': {
    path: ['aws', 'allowedCidrs'],
    type: 'string',
    list: true,
    describe: 'Who may reach the EC2 agents\' SSH port (dstack ssh, port forwards): CIDRs, comma-separated (default: your public address/32)',
  },
} as const satisfies Record<string, ConfigFlag>;

/** The flags given, by their CLI names. */
export type ConfigOptions = Partial<Record<keyof typeof CONFIG_FLAGS, string | number>>;

/**
 * Writes `~/.dstack/config.yaml` from flags, or asks for each setting on a terminal when no flag is
 * given; keeps what is already there (comments included). The new config is validated and its
 * backend provisioned (the bucket and queues created on AWS, bad credentials or region reported)
 * before anything is written, so a failed config leaves the old file, or none, as it was.
 */
export async function configCommand(ctx: ConfigContext, o: ConfigOptions): Promise<number> {
  const file = join(ctx.home, 'config.yaml');
  let text = '';
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  // A new file is written in block style, one setting a line, like a hand-written one.
  const doc = text.trim() ? parseDocument(text) : new Document({});
  const flags = Object.values(o).some((v) => v !== undefined);
  if (!flags && ctx.ask) {
    const current = (path: string[], fallback: string): string => String(doc.getIn(path) ?? fallback);
    o.backend = await ctx.ask('Backend (local or aws)', current(['backend'], 'local'));
    if (o.backend === 'aws') {
      o.region = await ctx.ask('AWS region', current(['aws', 'region'], ctx.env.AWS_REGION ?? 'us-east-1'));
      o.profile = (await ctx.ask('AWS profile (empty for the default credentials)', current(['aws', 'profile'], ''))) || undefined;
      o.bucket = await ctx.ask('S3 bucket for artifacts, logs and state', current(['aws', 'bucket'], ''));
      o.subnet = (await ctx.ask('EC2 subnet (empty for the default VPC)', current(['aws', 'subnet'], ''))) || undefined;
    }
  } else if (!flags) {
    ctx.out.line(text.trim() === '' ? `No config yet (${file}): the local backend is used.` : text.trimEnd());
    return 0;
  }
  for (const [flag, f] of Object.entries(CONFIG_FLAGS)) {
    const value = o[flag as keyof ConfigOptions];
    if (value === undefined) continue;
    doc.setIn(f.path, 'list' in f ? String(value).split(',').map((x) => x.trim()).filter((x) => x.length > 0) : value);
  }
  let next = doc.toString();
  let config = parseConfig(next, file, ctx.home, ctx.env);
  await ctx.check(config);
  // The fleet's security group opens the agents' SSH port to these CIDRs only: by default, to this machine.
  const aws = config.aws;
  if (config.backend === 'aws' && aws?.agents === 'ec2' && aws.sshPort > 0 && aws.allowedCidrs === undefined && ctx.publicAddress) {
    const cidr = await ctx.publicAddress().then(
      (ip) => (isIP(ip.trim()) === 4 ? `${ip.trim()}/32` : isIP(ip.trim()) === 6 ? `${ip.trim()}/128` : new Error(`not an IP address: ${ip.trim().slice(0, 40)}`)),
      (e: unknown) => (e instanceof Error ? e : new Error(String(e))),
    );
    if (cidr instanceof Error) {
      ctx.out.note(`warning: could not look up your public address (${cidr.message}): until you set \`dstack config --allowed-cidrs CIDR\`, \`dstack ssh\` and port forwards cannot reach EC2 agents`);
    } else {
      doc.setIn(['aws', 'allowedCidrs'], [cidr]);
      next = doc.toString();
      config = parseConfig(next, file, ctx.home, ctx.env);
      ctx.out.note(`The EC2 agents' SSH port (${aws.sshPort}) is open to your public address only (${cidr}): change it with \`dstack config --allowed-cidrs CIDR[,CIDR]\`.`);
    }
  }
  await writeAtomically(ctx.home, file, next);
  const where = config.backend === 'aws' ? `: bucket ${config.aws?.bucket ?? '?'} in ${config.aws?.region ?? '?'}, queues ${config.aws?.queuePrefix ?? 'dstack'}-jobs(-dlq)` : '';
  ctx.out.line(`Saved ${file} (backend ${config.backend}${where}).`);
  return 0;
}

/**
 * Replaces `file` whole (a temp file renamed over it): a reader, or a crash, sees the old file or the
 * new one. A symlinked config (dotfiles) is written where the link points, and stays a link.
 */
async function writeAtomically(dir: string, file: string, text: string): Promise<void> {
  const made = await mkdir(dir, { recursive: true });
  const target = await realpath(file).catch((e: unknown) => {
    if (errnoCode(e) === 'ENOENT') return file;
    throw e;
  });
  const temp = join(dirname(target), `.config.yaml.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await writeFile(temp, text);
    await rename(temp, target);
  } catch (e) {
    await rm(temp, { force: true });
    // A home made just now for this file goes too.
    if (made) await rmdir(made).catch(() => undefined);
    throw e;
  }
}
