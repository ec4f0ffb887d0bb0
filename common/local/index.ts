import { join } from 'node:path';
import type { DstackConfig } from '../config.js';
import { LocalAgentRegistry } from './local-compute.js';
import { LocalQueue } from './local-queue.js';
import { LocalStore } from './local-store.js';

/** The embedded backend's pieces, all under `<home>/local`. */
export interface LocalBackend {
  queue: LocalQueue;
  store: LocalStore;
  registry: LocalAgentRegistry;
  root: string;
}

export function openLocalBackend(config: DstackConfig): LocalBackend {
  const root = join(config.home, 'local');
  return {
    root,
    queue: new LocalQueue({ root: join(root, 'queues'), name: 'jobs', maxReceives: config.local.maxAttempts, pollMs: 250 }),
    store: new LocalStore(join(root, 'store')),
    registry: new LocalAgentRegistry(join(root, 'agents')),
  };
}
