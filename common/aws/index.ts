import { EC2Client } from '@aws-sdk/client-ec2';
import { PricingClient } from '@aws-sdk/client-pricing';
import type { AwsConfig, DstackConfig } from '../config.js';
import { agentUserData } from '../fleet/user-data.js';
import { Ec2Catalog } from './ec2-catalog.js';
import { Ec2Fleet } from './ec2-fleet.js';
import { ConfigError } from '../errors.js';
import type { Compute, Queue, Store } from '../ports.js';
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
      q = open(`${settings.queuePrefix}-${profileId}`);
      opened.set(profileId, q);
    }
    return q;
  };
  return { queue, store, queueFor };
}

/** The EC2 fleet for backend aws with `agents: ec2`: its catalog of types and prices, and its launches. */
export function openEc2Fleet(config: DstackConfig, profile: AwsSettings['profile']): Compute {
  const aws = config.aws;
  if (!aws?.bucket) throw new ConfigError('backend `aws` needs a bucket: run `dstack config --backend aws --bucket NAME`');
  const common = { region: aws.region, ...(profile ? { profile } : {}) };
  const ec2 = new EC2Client(common);
  // The Pricing API answers in us-east-1 (and a few others) for every region.
  const pricing = new PricingClient({ ...common, region: 'us-east-1' });
  return new Ec2Fleet({
    ec2,
    catalog: new Ec2Catalog(ec2, pricing, aws.region),
    fleet: aws.queuePrefix,
    maxInstances: aws.maxInstances,
    ...(aws.ami ? { ami: aws.ami } : {}),
    ...(aws.subnet ? { subnet: aws.subnet } : {}),
    ...(aws.securityGroups ? { securityGroups: aws.securityGroups } : {}),
    ...(aws.instanceProfile ? { instanceProfile: aws.instanceProfile } : {}),
    userData: (profileId) => agentUserData(config, profileId),
  });
}
