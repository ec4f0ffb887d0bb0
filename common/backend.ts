import { join } from 'node:path';
import type { DstackConfig } from './config.js';
import { LocalAgentRegistry } from './local/local-compute.js';
import { LocalQueue } from './local/local-queue.js';
import { LocalStore } from './local/local-store.js';
import type { Queue, Store } from './ports.js';

/** The transports a process uses, plus the local directory for agents, their logs and work. */
export interface Backend {
  /** The default queue: the one local agents (and agents started by hand) serve. */
  queue: Queue;
  /** The queue of one placement profile; `default`, and every profile outside EC2, is `queue`. */
  queueFor: (profileId: string) => Promise<Queue>;
  store: Store;
  registry: LocalAgentRegistry;
  /** `<home>/local`: agent registry, agent logs, job directories (and, locally, the queue and store). */
  root: string;
}

/** Picks the local or AWS transports from the config. The AWS SDK is loaded only for the AWS backend. */
export async function openBackend(config: DstackConfig): Promise<Backend> {
  const root = join(config.home, 'local');
  const registry = new LocalAgentRegistry(join(root, 'agents'));
  if (config.backend === 'aws') {
    const { awsSettings, openAws } = await import('./aws/index.js');
    const { queue, store, queueFor } = await openAws(awsSettings(config.aws, maxReceives(config), join(config.home, 'config.yaml')));
    return { queue, store, registry, root, queueFor: config.aws?.agents === 'ec2' ? queueFor : () => Promise.resolve(queue) };
  }
  const queue = new LocalQueue({ root: join(root, 'queues'), name: 'jobs', maxReceives: maxReceives(config), pollMs: 250 });
  return { root, registry, queue, queueFor: () => Promise.resolve(queue), store: new LocalStore(join(root, 'store')) };
}

/**
 * Deliveries before the transport dead-letters a message on its own: one more than the attempts, so
 * that the agent that receives a job past its last attempt records why it failed and dead-letters it.
 */
function maxReceives(config: DstackConfig): number {
  return config.local.maxAttempts + 1;
}
