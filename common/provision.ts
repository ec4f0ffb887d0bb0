import { join } from 'node:path';
import { awsOwner, maxReceives, openBackend } from './backend.js';
import { ownerQueueId } from './owner.js';
import type { DstackConfig } from './config.js';
import type { Queue } from './ports.js';
import type * as AwsProvision from './aws/provision.js';
import type { AwsSettings } from './aws/setup.js';

// What the CLI creates, kept out of the agent's import graph: the agent only opens (common/backend.ts).

async function settingsOf(config: DstackConfig): Promise<{ aws: typeof AwsProvision; settings: AwsSettings }> {
  const [{ awsSettings }, aws] = await Promise.all([import('./aws/index.js'), import('./aws/provision.js')]);
  return { aws, settings: awsSettings(config.aws, maxReceives(config), join(config.home, 'config.yaml')) };
}

/**
 * What `dstack config` does before it saves a config: on AWS, creates the bucket and the job queues
 * where missing and sets the redrive policy (so every other command, and the agent, only opens
 * them); locally, opens the backend.
 */
export async function provisionBackend(config: DstackConfig): Promise<void> {
  if (config.backend === 'aws') {
    const { aws, settings } = await settingsOf(config);
    await aws.provisionAws(settings);
    // `agents: local`: this user's agents serve a queue of their own (see openBackend).
    if (config.aws?.agents === 'local') await aws.ensureProfileQueues(settings, ownerQueueId(await awsOwner(config)()));
    return;
  }
  await openBackend(config);
}

/**
 * The CLI's `queueFor`: the backend's, which only opens, plus `create` for `run`'s own job, which
 * creates its placement profile's queues on an EC2 fleet (or, with `agents: local`, the owner's
 * queues) when they are missing.
 */
export function creatingQueueFor(
  config: DstackConfig,
  backend: { queueFor: (profileId: string) => Promise<Queue>; owner: () => Promise<string> },
): (profileId: string, options?: { create?: boolean }) => Promise<Queue> {
  // Profile queues exist only on AWS with an EC2 fleet, owner queues with local agents on AWS;
  // elsewhere every profile is the default queue.
  const mode = config.backend === 'aws' ? config.aws?.agents : undefined;
  const created = new Map<string, Promise<void>>();
  return async (profileId, options = {}) => {
    const queueId = mode === 'local' ? ownerQueueId(await backend.owner()) : mode === 'ec2' && profileId !== 'default' ? profileId : undefined;
    if (options.create && queueId !== undefined) {
      let done = created.get(queueId);
      if (!done) {
        done = settingsOf(config).then(({ aws, settings }) => aws.ensureProfileQueues(settings, queueId));
        created.set(queueId, done);
        done.catch(() => created.delete(queueId));
      }
      await done;
    }
    return backend.queueFor(profileId);
  };
}
