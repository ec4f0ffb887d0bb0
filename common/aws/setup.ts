import { CreateBucketCommand, HeadBucketCommand, S3Client, type BucketLocationConstraint } from '@aws-sdk/client-s3';
import { CreateQueueCommand, GetQueueAttributesCommand, GetQueueUrlCommand, SetQueueAttributesCommand, SQSClient } from '@aws-sdk/client-sqs';
import { ConfigError } from '../errors.js';
import { awsCode, awsStatus, wrapAws } from './errors.js';

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

export function awsClients(s: AwsSettings): AwsClients {
  const common = { region: s.region, ...(s.profile ? { profile: s.profile } : {}) };
  return {
    sqs: new SQSClient({ ...common, ...(s.endpoints?.sqs ? { endpoint: s.endpoints.sqs } : {}) }),
    // An endpoint override means an S3-compatible store or an emulator: path-style addressing works with all of them.
    s3: new S3Client({ ...common, ...(s.endpoints?.s3 ? { endpoint: s.endpoints.s3, forcePathStyle: true } : {}) }),
  };
}

/** Turns credential and region failures into one line that says what to fix. */
function explain(e: unknown, s: AwsSettings, what: string): Error {
  const code = awsCode(e);
  if (/InvalidClientTokenId|SignatureDoesNotMatch|InvalidAccessKeyId|UnrecognizedClientException|CredentialsProviderError|ExpiredToken/.test(code)) {
    return new ConfigError(`AWS rejected the credentials${s.profile ? ` of profile \`${s.profile}\`` : ''} (${code}) while trying to ${what}: check \`aws configure\` or run \`dstack config\``);
  }
  if (/ENOTFOUND|EAI_AGAIN|ECONNREFUSED|UnknownEndpoint|InvalidRegion/.test(code) || /ENOTFOUND|ECONNREFUSED/.test(String((e as Error)?.message))) {
    return new ConfigError(`cannot reach AWS in region \`${s.region}\` (${code}) while trying to ${what}: check the region and endpoints with \`dstack config\``);
  }
  return wrapAws(e, what);
}

/** Creates the bucket and the job queue with its dead-letter queue, where they do not exist yet. */
export async function ensureAws(c: AwsClients, s: AwsSettings): Promise<{ queueUrl: string; dlqUrl: string }> {
  try {
    await c.s3.send(new HeadBucketCommand({ Bucket: s.bucket }));
  } catch (e) {
    if (awsStatus(e) !== 404 && awsCode(e) !== 'NotFound' && awsCode(e) !== 'NoSuchBucket') throw explain(e, s, `open bucket ${s.bucket}`);
    try {
      await c.s3.send(
        new CreateBucketCommand({
          Bucket: s.bucket,
          ...(s.region === 'us-east-1' ? {} : { CreateBucketConfiguration: { LocationConstraint: s.region as BucketLocationConstraint } }),
        }),
      );
    } catch (e2) {
      if (awsCode(e2) !== 'BucketAlreadyOwnedByYou') throw explain(e2, s, `create bucket ${s.bucket}`);
    }
  }
  const dlqUrl = await ensureQueue(c, s, `${s.queuePrefix}-jobs-dlq`, { MessageRetentionPeriod: String(14 * 86400) });
  const dlq = await c.sqs.send(new GetQueueAttributesCommand({ QueueUrl: dlqUrl, AttributeNames: ['QueueArn'] }));
  const redrive = JSON.stringify({ deadLetterTargetArn: dlq.Attributes?.QueueArn, maxReceiveCount: String(s.maxReceives) });
  const queueUrl = await ensureQueue(c, s, `${s.queuePrefix}-jobs`, { RedrivePolicy: redrive, ReceiveMessageWaitTimeSeconds: '20', VisibilityTimeout: '60' });
  await c.sqs.send(new SetQueueAttributesCommand({ QueueUrl: queueUrl, Attributes: { RedrivePolicy: redrive } })).catch((e: unknown) => {
    throw explain(e, s, 'set the redrive policy');
  });
  return { queueUrl, dlqUrl };
}

async function ensureQueue(c: AwsClients, s: AwsSettings, name: string, attributes: Record<string, string>): Promise<string> {
  try {
    const r = await c.sqs.send(new GetQueueUrlCommand({ QueueName: name }));
    if (r.QueueUrl) return r.QueueUrl;
  } catch (e) {
    if (!/NonExistentQueue|QueueDoesNotExist/.test(awsCode(e))) throw explain(e, s, `open queue ${name}`);
  }
  try {
    const r = await c.sqs.send(new CreateQueueCommand({ QueueName: name, Attributes: attributes }));
    return r.QueueUrl ?? '';
  } catch (e) {
    throw explain(e, s, `create queue ${name}`);
  }
}
