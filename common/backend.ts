import { join } from 'node:path';
import type { DstackConfig } from './config.js';
import { LocalAgentRegistry } from './local/local-compute.js';
import { LocalQueue } from './local/local-queue.js';
import { LocalStore } from './local/local-store.js';
import type { Queue, Store } from './ports.js';

/** The transports a process uses, plus the local directory for agents, their logs and work. */
export interface Backend {
  queue: Queue;
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
    const { queue, store } = await openAws(awsSettings(config.aws, config.local.maxAttempts, join(config.home, 'config.yaml')));
    return { queue, store, registry, root };
  }
  return {
    root,
    registry,
    queue: new LocalQueue({ root: join(root, 'queues'), name: 'jobs', maxReceives: config.local.maxAttempts, pollMs: 250 }),
    store: new LocalStore(join(root, 'store')),
  };
}
