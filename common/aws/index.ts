import type { AwsConfig } from '../config.js';
import { ConfigError } from '../errors.js';
import type { Queue, Store } from '../ports.js';
import { profileQueuePrefix } from '../fleet/match.js';
import { S3Store } from './s3-store.js';
import { awsClients, findQueues, openExisting, queueNames, type AwsSettings } from './setup.js';
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
 * The Queue and Store on SQS and S3 that `dstack config` created; opening them changes nothing
 * (HeadBucket, GetQueueUrl), and a missing one is a ConfigError that says to run `dstack config`.
 * `queueFor(profileId)` opens the queue of one placement profile, `<queuePrefix>-<profileId>-jobs`,
 * which only that profile's fleet serves (`run` creates it: see common/provision.ts).
 */
export async function openAws(settings: AwsSettings): Promise<{ queue: Queue; store: Store; queueFor: (profileId: string) => Promise<Queue> }> {
  const clients = awsClients(settings);
  const store = new S3Store({ s3: clients.s3, bucket: settings.bucket, prefix: 'dstack/' });
  const queueAt = ({ queueUrl, dlqUrl }: { queueUrl: string; dlqUrl: string }): Queue =>
    new SqsQueue({ sqs: clients.sqs, queueUrl, dlqUrl, claims: store, ...(settings.visibilityCapMs ? { visibilityCapMs: settings.visibilityCapMs } : {}) });
  const queue = queueAt(await openExisting(clients, settings));
  const opened = new Map<string, Promise<Queue>>();
  const queueFor = (profileId: string): Promise<Queue> => {
    if (profileId === 'default') return Promise.resolve(queue);
    let q = opened.get(profileId);
    if (!q) {
      const s = { ...settings, queuePrefix: profileQueuePrefix(settings.queuePrefix, profileId) };
      // The bucket is open already: only the profile's queues are looked up.
      q = findQueues(clients, s).then((urls) => {
        if (urls) return queueAt(urls);
        throw new ConfigError(`queue ${queueNames(s.queuePrefix).jobs} of placement profile ${profileId} does not exist: \`dstack run\` creates it with the profile's first job`);
      });
      opened.set(profileId, q);
      // Not remembered when it fails: the next call tries again.
      q.catch(() => opened.delete(profileId));
    }
    return q;
  };
  return { queue, store, queueFor };
}
