import { CreateBucketCommand, HeadBucketCommand, type BucketLocationConstraint } from '@aws-sdk/client-s3';
import { CreateQueueCommand, GetQueueAttributesCommand, SetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { profileQueuePrefix } from '../fleet/match.js';
import { awsCode } from './errors.js';
import { awsClients, explain, findQueues, isMissingBucket, openQueue, queueNames, type AwsClients, type AwsSettings } from './setup.js';

// Provisioning: what `dstack config` creates, and `run` for its own profile. Only the CLI loads this
// file, so the agent's bundle (and so its IAM policy) has no Create* or SetQueueAttributes.

/** `dstack config`'s provisioning: creates the bucket and the job queues where missing, and sets the redrive policy. */
export async function provisionAws(settings: AwsSettings): Promise<void> {
  await ensureAws(awsClients(settings), settings);
}

/** The queues of one placement profile, `<queuePrefix>-<profileId>-jobs(-dlq)`, created where missing (what `run` needs for its job). */
export async function ensureProfileQueues(settings: AwsSettings, profileId: string): Promise<void> {
  const clients = awsClients(settings);
  const s = { ...settings, queuePrefix: profileQueuePrefix(settings.queuePrefix, profileId) };
  if (!(await findQueues(clients, s))) await ensureQueues(clients, s);
}

/**
 * Creates the bucket and the job queue with its dead-letter queue, where they do not exist yet, and
 * sets the redrive policy: what `dstack config` does (and `run`, for a placement profile's queue).
 */
export async function ensureAws(c: AwsClients, s: AwsSettings): Promise<{ queueUrl: string; dlqUrl: string }> {
  await ensureBucket(c, s);
  return ensureQueues(c, s);
}

async function ensureBucket(c: AwsClients, s: AwsSettings): Promise<void> {
  try {
    await c.s3.send(new HeadBucketCommand({ Bucket: s.bucket }));
  } catch (e) {
    if (!isMissingBucket(e)) throw explain(e, s, `open bucket ${s.bucket}`, s.bucket);
    try {
      await c.s3.send(
        new CreateBucketCommand({
          Bucket: s.bucket,
          ...(s.region === 'us-east-1' ? {} : { CreateBucketConfiguration: { LocationConstraint: s.region as BucketLocationConstraint } }),
        }),
      );
    } catch (e2) {
      if (awsCode(e2) !== 'BucketAlreadyOwnedByYou') throw explain(e2, s, `create bucket ${s.bucket}`, s.bucket);
    }
  }
}

/** Creates the job queue of `s.queuePrefix` and its dead-letter queue where missing, and sets the redrive policy. */
export async function ensureQueues(c: AwsClients, s: AwsSettings): Promise<{ queueUrl: string; dlqUrl: string }> {
  const names = queueNames(s.queuePrefix);
  const dlqUrl = await ensureQueue(c, s, names.dlq, { MessageRetentionPeriod: String(14 * 86400) });
  const dlq = await c.sqs.send(new GetQueueAttributesCommand({ QueueUrl: dlqUrl, AttributeNames: ['QueueArn'] })).catch((e: unknown) => {
    throw explain(e, s, `read the ARN of queue ${names.dlq}`);
  });
  const redrive = JSON.stringify({ deadLetterTargetArn: dlq.Attributes?.QueueArn, maxReceiveCount: String(s.maxReceives) });
  const queueUrl = await ensureQueue(c, s, names.jobs, { RedrivePolicy: redrive, ReceiveMessageWaitTimeSeconds: '20', VisibilityTimeout: '60' });
  await c.sqs.send(new SetQueueAttributesCommand({ QueueUrl: queueUrl, Attributes: { RedrivePolicy: redrive } })).catch((e: unknown) => {
    throw explain(e, s, 'set the redrive policy');
  });
  return { queueUrl, dlqUrl };
}

async function ensureQueue(c: AwsClients, s: AwsSettings, name: string, attributes: Record<string, string>): Promise<string> {
  const url = await openQueue(c, s, name);
  if (url) return url;
  try {
    const r = await c.sqs.send(new CreateQueueCommand({ QueueName: name, Attributes: attributes }));
    return r.QueueUrl ?? '';
  } catch (e) {
    throw explain(e, s, `create queue ${name}`);
  }
}
