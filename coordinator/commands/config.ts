import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Document, parseDocument } from 'yaml';
import { loadConfig } from '../../common/config.js';
import { errnoCode } from '../../common/errors.js';
import type { Output } from '../output.js';

/** `dstack config` runs before (and without) a backend: it is how a broken one gets fixed. */
export interface ConfigContext {
  home: string;
  out: Output;
  env: Record<string, string | undefined>;
  /** Asks on a terminal, offering a default; undefined when there is no terminal. */
  ask?: (question: string, fallback: string) => Promise<string>;
  /** Opens the configured backend (creating the bucket and queues on AWS). */
  check: () => Promise<void>;
}

export interface ConfigOptions {
  backend?: string;
  region?: string;
  profile?: string;
  bucket?: string;
  queuePrefix?: string;
  subnet?: string;
  sqsEndpoint?: string;
  s3Endpoint?: string;
  maxInstances?: number;
  maxParallelJobs?: number;
  agents?: string;
  ami?: string;
  instanceProfile?: string;
}

/**
 * Writes `~/.dstack/config.yaml` from flags, or asks for each setting on a terminal when no flag is
 * given; keeps what is already there (comments included), validates, then opens the backend once so
 * that a missing bucket or queue is created and bad credentials or region are reported now.
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
  const set = (path: string[], value: unknown): void => {
    if (value !== undefined) doc.setIn(path, value);
  };
  set(['backend'], o.backend);
  set(['aws', 'region'], o.region);
  set(['aws', 'profile'], o.profile);
  set(['aws', 'bucket'], o.bucket);
  set(['aws', 'queuePrefix'], o.queuePrefix);
  set(['aws', 'subnet'], o.subnet);
  set(['aws', 'endpoints', 'sqs'], o.sqsEndpoint);
  set(['aws', 'endpoints', 's3'], o.s3Endpoint);
  set(['aws', 'maxInstances'], o.maxInstances);
  set(['aws', 'agents'], o.agents);
  set(['aws', 'ami'], o.ami);
  set(['aws', 'instanceProfile'], o.instanceProfile);
  set(['local', 'maxParallelJobs'], o.maxParallelJobs);
  await mkdir(ctx.home, { recursive: true });
  const previous = text;
  await writeFile(file, doc.toString());
  try {
    const config = await loadConfig(ctx.home, ctx.env);
    await ctx.check();
    const where = config.backend === 'aws' ? `: bucket ${config.aws?.bucket ?? '?'} in ${config.aws?.region ?? '?'}, queues ${config.aws?.queuePrefix ?? 'dstack'}-jobs(-dlq)` : '';
    ctx.out.line(`Saved ${file} (backend ${config.backend}${where}).`);
    return 0;
  } catch (e) {
    // Nothing half-done: the old file comes back, and the error says what to fix.
    await writeFile(file, previous);
    throw e;
  }
}
