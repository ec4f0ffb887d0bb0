import { HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { GetQueueUrlCommand, SQSClient } from '@aws-sdk/client-sqs';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { ConfigError } from '../errors.js';
import { awsCode, awsStatus, credentialsError, wrapAws } from './errors.js';

/** What the AWS transports need, from `dstack config` (and the DSTACK_AWS_* overrides). */
export interface AwsSettings {
  region: string;
  profile?: string;
  bucket: string;
  queuePrefix: string;
  endpoints?: { sqs?: string; s3?: string };
  /** Deliveries before SQS moves a job to the dead-letter queue. */
  maxReceives: number;
  /** SQS's visibility cap (12 h), lowered in tests of the hand-over. */
  visibilityCapMs?: number;
}

export interface AwsClients {
  sqs: SQSClient;
  s3: S3Client;
}

/**
 * Connections to S3 kept open and reused (keep-alive): enough for a save's 32 uploads, or a restore's
 * parallel pack reads, at once without queueing behind each other or opening a connection per blob
 * (a restore's chunks are read on the fetching thread, over its own keep-alive sockets).
 */
export const S3_MAX_SOCKETS = 64;

export function awsClients(s: AwsSettings): AwsClients {
  const common = { region: s.region, ...(s.profile ? { profile: s.profile } : {}) };
  return {
    sqs: new SQSClient({ ...common, ...(s.endpoints?.sqs ? { endpoint: s.endpoints.sqs } : {}) }),
    // An endpoint override means an S3-compatible store or an emulator: path-style addressing works with all of them.
    s3: new S3Client({
      ...common,
      ...(s.endpoints?.s3 ? { endpoint: s.endpoints.s3, forcePathStyle: true } : {}),
      // Reads are not CRC-checked by the SDK (uploads still send their checksum, which S3 verifies):
      // every artifact blob read is checked against its sha256 by restore, and TLS guards the rest;
      // a CRC of each GET body on top would be a second pass over every byte, in JavaScript.
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: {
        httpAgent: new HttpAgent({ keepAlive: true, maxSockets: S3_MAX_SOCKETS }),
        httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: S3_MAX_SOCKETS }),
      },
    }),
  };
}

/**
 * Turns credential, region and access failures into one line that says what to fix. `bucket` names
 * the bucket when the call was on it: S3 answers HEAD requests with a bare 403 that carries no code.
 */
export function explain(e: unknown, s: AwsSettings, what: string, bucket?: string): Error {
  const code = awsCode(e);
  const profile = s.profile ? ` of profile \`${s.profile}\`` : '';
  const credentials = credentialsError(e, { what, profile: s.profile });
  if (credentials) return credentials;
  if (/ENOTFOUND|EAI_AGAIN|ECONNREFUSED|UnknownEndpoint|InvalidRegion/.test(code) || /ENOTFOUND|ECONNREFUSED/.test(String((e as Error)?.message))) {
    return new ConfigError(`cannot reach AWS in region \`${s.region}\` (${code}) while trying to ${what}: check the region and endpoints with \`dstack config\``, { cause: e });
  }
  if (bucket !== undefined && awsStatus(e) === 403) {
    return new ConfigError(`access denied to bucket ${bucket}: wrong account or missing s3:ListBucket (HTTP 403 while trying to ${what}${profile ? ` with the credentials${profile}` : ''})`, { cause: e });
  }
  return wrapAws(e, what);
}

export const isMissingBucket = (e: unknown): boolean => awsStatus(e) === 404 || awsCode(e) === 'NotFound' || awsCode(e) === 'NoSuchBucket';
const isMissingQueue = (e: unknown): boolean => /NonExistentQueue|QueueDoesNotExist/.test(awsCode(e));

/** The job queue of a queue prefix, and its dead-letter queue. */
export const queueNames = (queuePrefix: string): { jobs: string; dlq: string } => ({ jobs: `${queuePrefix}-jobs`, dlq: `${queuePrefix}-jobs-dlq` });

/**
 * Opens the bucket and job queues that `dstack config` created, changing nothing: HeadBucket and
 * GetQueueUrl only. When one is missing it says, in one line, to run `dstack config`.
 */
export async function openExisting(c: AwsClients, s: AwsSettings): Promise<{ queueUrl: string; dlqUrl: string }> {
  const [bucket, queues] = await Promise.allSettled([c.s3.send(new HeadBucketCommand({ Bucket: s.bucket })), findQueues(c, s)]);
  if (bucket.status === 'rejected') {
    if (isMissingBucket(bucket.reason)) throw new ConfigError(`bucket ${s.bucket} does not exist (region ${s.region}): run \`dstack config\` to create it`);
    throw explain(bucket.reason, s, `open bucket ${s.bucket}`, s.bucket);
  }
  if (queues.status === 'rejected') throw queues.reason;
  if (!queues.value) throw new ConfigError(`queue ${queueNames(s.queuePrefix).jobs} (or its -dlq) does not exist (region ${s.region}): run \`dstack config\` to create it`);
  return queues.value;
}

/** The URLs of the job queue of `s.queuePrefix` and its dead-letter queue (GetQueueUrl); undefined when either is missing. */
export async function findQueues(c: AwsClients, s: AwsSettings): Promise<{ queueUrl: string; dlqUrl: string } | undefined> {
  const names = queueNames(s.queuePrefix);
  const [queueUrl, dlqUrl] = await Promise.all([openQueue(c, s, names.jobs), openQueue(c, s, names.dlq)]);
  return queueUrl && dlqUrl ? { queueUrl, dlqUrl } : undefined;
}

/** A queue's URL; undefined when there is no such queue. */
export async function openQueue(c: AwsClients, s: AwsSettings, name: string): Promise<string | undefined> {
  try {
    return (await c.sqs.send(new GetQueueUrlCommand({ QueueName: name }))).QueueUrl;
  } catch (e) {
    if (isMissingQueue(e)) return undefined;
    throw explain(e, s, `open queue ${name}`);
  }
}
