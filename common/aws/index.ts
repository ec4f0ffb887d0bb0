import type { AwsConfig } from '../config.js';
import { ConfigError } from '../errors.js';
import type { Queue, Store } from '../ports.js';
import { profileQueuePrefix } from '../fleet/match.js';
import { S3Store } from './s3-store.js';
import { awsClients, ensureAws, type AwsSettings } from './setup.js';
import { SqsQueue } from './sqs-queue.js';

export function awsSettings(aws: AwsConfig | undefined, maxReceives: number, configFile: string): AwsSettings {
  if (!aws?.bucket) throw new ConfigError(`backend \`aws\` needs a bucket: run \`dstack config --backend aws --bucket NAME\` (or set DSTACK_AWS_S3_BUCKET); see ${configFile}`);
  return {
    region: aws.region,
    ...(aws.profile ? { profile: aws.profile } : {}),
    bucket: aws.bucket,
    queuePrefix: aws.queuePrefix,
    ...(aws.endpoints ? { endpoints: { ...(aws.endpoints.sqs ? { sqs: aws.endpoints.sqs } : {}), ...(aws.endpoints.s3 ? { s3: aws.endpoints.s3 } : {}) } } : {}),
    maxReceives,
    visibilityCapMs: aws.visibilityCapSec * 1000,
  };
}

/**
 * The Queue and Store on SQS and S3; creates the bucket and queues if they are missing.
 * `queueFor(profileId)` opens (and creates) the queue of one placement profile,
 * `<queuePrefix>-<profileId>-jobs`, which only that profile's fleet serves.
 */
export async function openAws(settings: AwsSettings): Promise<{ queue: Queue; store: Store; queueFor: (profileId: string) => Promise<Queue> }> {
  const clients = awsClients(settings);
  const store = new S3Store({ s3: clients.s3, bucket: settings.bucket, prefix: 'dstack/' });
  const open = async (prefix: string): Promise<Queue> => {
    const { queueUrl, dlqUrl } = await ensureAws(clients, { ...settings, queuePrefix: prefix });
    return new SqsQueue({ sqs: clients.sqs, queueUrl, dlqUrl, claims: store, ...(settings.visibilityCapMs ? { visibilityCapMs: settings.visibilityCapMs } : {}) });
  };
  const queue = await open(settings.queuePrefix);
  const opened = new Map<string, Promise<Queue>>();
  const queueFor = (profileId: string): Promise<Queue> => {
    if (profileId === 'default') return Promise.resolve(queue);
    let q = opened.get(profileId);
    if (!q) {
      q = open(profileQueuePrefix(settings.queuePrefix, profileId));
      opened.set(profileId, q);
      // Not remembered when it fails: the next call tries again.
      q.catch(() => opened.delete(profileId));
    }
    return q;
  };
  return { queue, store, queueFor };
}
