import { join } from 'node:path';
import type { AwsConfig, DstackConfig } from './config.js';
import { LocalAgentRegistry } from './local/local-compute.js';
import { LocalQueue } from './local/local-queue.js';
import { LocalStore } from './local/local-store.js';
import type { Queue, Store } from './ports.js';
import { LocalSecretStore } from './local/local-secrets.js';
import { lazySecretStore, type SecretStore } from './secrets.js';
import { localOwner, once, ownerQueueId } from './owner.js';

/** The transports a process uses, plus the local directory for agents, their logs and work. */
export interface Backend {
  /**
   * The shared default queue (`<queuePrefix>-jobs` on AWS). Agents serve `queueFor('default')`: this
   * queue, except with `aws.agents: local`, where it is their owner's.
   */
  queue: Queue;
  /**
   * The queue of one placement profile; `default`, and every profile outside EC2, is `queue`, except
   * with `aws.agents: local`: there every profile is the owner's own queue (see `openBackend`), and
   * an agent serves `queueFor('default')`. It only opens: `run` creates what its job needs
   * (common/provision.ts). Profiles that share a queue get one Queue object, by which the fleet
   * counts a shared backlog once (coordinator/fleet.ts).
   */
  queueFor: (profileId: string) => Promise<Queue>;
  /** Who this process acts as: the caller's ARN on AWS (asked of STS once, when first needed), `user@host` locally. */
  owner: () => Promise<string>;
  store: Store;
  registry: LocalAgentRegistry;
  /** Secrets: files under `<home>/local/secrets` (local backend), or AWS Secrets Manager (backend aws). */
  secrets?: SecretStore;
  /** `<home>/local`: agent registry, agent logs, job directories (and, locally, the queue and store). */
  root: string;
}

/**
 * Picks the local or AWS transports from the config. The AWS SDK is loaded only for the AWS backend.
 * On AWS it opens what `dstack config` created (common/provision.ts) and creates nothing.
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
    const aws = config.aws;
    const owner = awsOwner(config);
    // `agents: local`: each owner's jobs go to a queue of its own (`<queuePrefix>-u<hash of the ARN>-jobs`), which
    // only that owner's agents serve, so users sharing a bucket and queue prefix never run each other's jobs.
    // `agents: ec2` keeps one queue per profile for every owner of the account: the fleet is the account's,
    // its instances run whoever's jobs, and they hold no user's credentials. `none` serves the shared queue.
    const ownQueue = once(async () => queueFor(ownerQueueId(await owner())));
    const byMode = { ec2: queueFor, local: () => ownQueue(), none: () => Promise.resolve(queue) };
    return { queue, store, registry, root, ...secrets, owner, queueFor: byMode[aws?.agents ?? 'ec2'] };
  }
  const queue = new LocalQueue({ root: join(root, 'queues'), name: 'jobs', maxReceives: maxReceives(config), pollMs: 250 });
  const secrets = new LocalSecretStore(join(root, 'secrets'));
  const owner = localOwner();
  return { root, registry, queue, secrets, owner: () => Promise.resolve(owner), queueFor: () => Promise.resolve(queue), store: new LocalStore(join(root, 'store')) };
}

/** The caller's ARN from STS GetCallerIdentity, asked for once (the AWS backend's owner). */
export function awsOwner(config: DstackConfig): () => Promise<string> {
  const aws = config.aws;
  return once(async () => {
    const { callerArn } = await import('./aws/identity.js');
    return callerArn({ region: aws?.region ?? 'us-east-1', ...(aws?.profile ? { profile: aws.profile } : {}), ...(aws?.endpoints?.sts ? { endpoint: aws.endpoints.sts } : {}) });
  });
}

/**
 * Deliveries before the transport dead-letters a message on its own. Attempts are counted in the
 * Store, and the agent that receives a job past its last attempt records why it failed and
 * dead-letters it; this is only the backstop for messages no agent can even read. It leaves room
 * for deliveries that reach no agent: a receive whose response is lost, or the open long poll of an
 * agent killed with SIGKILL, still counts as a receive.
 */
export function maxReceives(config: DstackConfig): number {
  return config.local.maxAttempts + 5;
}
