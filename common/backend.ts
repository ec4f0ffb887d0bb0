import { join } from 'node:path';
import type { AwsConfig, DstackConfig } from './config.js';
import { LocalAgentRegistry } from './local/local-compute.js';
import { LocalQueue } from './local/local-queue.js';
import { LocalStore } from './local/local-store.js';
import type { Queue, Store } from './ports.js';
import { LocalSecretStore } from './local/local-secrets.js';
import { lazySecretStore, type SecretStore } from './secrets.js';

/** The transports a process uses, plus the local directory for agents, their logs and work. */
export interface Backend {
  /** The default queue: the one local agents (and agents started by hand) serve. */
  queue: Queue;
  /** The queue of one placement profile; `default`, and every profile outside EC2, is `queue`. */
  queueFor: (profileId: string) => Promise<Queue>;
  store: Store;
  registry: LocalAgentRegistry;
  /** Secrets: files under `<home>/local/secrets` (local backend), or AWS Secrets Manager (backend aws). */
  secrets?: SecretStore;
  /** `<home>/local`: agent registry, agent logs, job directories (and, locally, the queue and store). */
  root: string;
}

/**
 * Picks the local or AWS transports from the config. The AWS SDK is loaded only for the AWS backend.
 * `awsSecrets` opens the AWS backend's secret store: the composition root passes it, so that the
 * agent bundle holds only Secrets Manager's read call and the CLI's the rest (see ami/iam/).
 */
export async function openBackend(config: DstackConfig, o: { awsSecrets?: (aws: AwsConfig | undefined) => Promise<SecretStore> } = {}): Promise<Backend> {
  const root = join(config.home, 'local');
  const registry = new LocalAgentRegistry(join(root, 'agents'));
  if (config.backend === 'aws') {
    const { awsSettings, openAws } = await import('./aws/index.js');
    const { queue, store, queueFor } = await openAws(awsSettings(config.aws, maxReceives(config), join(config.home, 'config.yaml')));
    // Secrets Manager in every `agents` mode, so that the CLI and every agent, local or on EC2, see one store.
    const { awsSecrets } = o;
    const secrets = awsSecrets ? { secrets: lazySecretStore(() => awsSecrets(config.aws)) } : {};
    return { queue, store, registry, root, ...secrets, queueFor: config.aws?.agents === 'ec2' ? queueFor : () => Promise.resolve(queue) };
  }
  const queue = new LocalQueue({ root: join(root, 'queues'), name: 'jobs', maxReceives: maxReceives(config), pollMs: 250 });
  const secrets = new LocalSecretStore(join(root, 'secrets'));
  return { root, registry, queue, secrets, queueFor: () => Promise.resolve(queue), store: new LocalStore(join(root, 'store')) };
}

/**
 * Deliveries before the transport dead-letters a message on its own. Attempts are counted in the
 * Store, and the agent that receives a job past its last attempt records why it failed and
 * dead-letters it; this is only the backstop for messages no agent can even read. It leaves room
 * for deliveries that reach no agent: a receive whose response is lost, or the open long poll of an
 * agent killed with SIGKILL, still counts as a receive.
 */
function maxReceives(config: DstackConfig): number {
  return config.local.maxAttempts + 5;
}
