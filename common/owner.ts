import { hostname, userInfo } from 'node:os';
import { sha256 } from './hash.js';

/**
 * Run owners. Every run records who submitted it: on AWS the caller's ARN from STS
 * GetCallerIdentity, on the local backend `user@host`. `ps` shows owners, `stop` and `rm` refuse
 * another owner's run without --force, and with `aws.agents: local` each owner has a queue of its own.
 */

/** The owner of runs submitted on this machine with the local backend: `user@host`. */
export function localOwner(): string {
  let user: string;
  try {
    user = userInfo().username;
  } catch {
    // No passwd entry for this uid (some containers): the uid still tells users apart.
    user = `uid${process.getuid?.() ?? '?'}`;
  }
  return `${user}@${hostname()}`;
}

/** How `ps` shows an owner: an ARN without its `arn:aws:iam::ACCOUNT:` head (`user/alice`), anything else as it is. */
export function ownerLabel(owner: string): string {
  const parts = owner.split(':');
  return parts[0] === 'arn' && parts.length >= 6 ? parts.slice(5).join(':') : owner;
}

/**
 * The pseudo-profile id of an owner's own queue (`<queuePrefix>-u<8 hex>-jobs`) with `agents: local`:
 * a short hash of the owner, so that users who share a bucket and queue prefix never receive each
 * other's jobs. Profile ids are `p<10 hex>`, so the two never meet.
 */
export function ownerQueueId(owner: string): string {
  return `u${sha256(owner).slice(0, 8)}`;
}

/**
 * Session names an SDK makes up when the profile names none: the JS SDK's `aws-sdk-js-<ms>` (role_arn
 * profiles) and `aws-sdk-js-session-<ms>` (web identity), botocore's `botocore-session-<s>`.
 */
const GENERATED_SESSION = /^(aws-sdk-js-(session-)?|botocore-session-)\d+$/;

/**
 * The owner an ARN stands for: an assumed role's session name, when an SDK generated it, is dropped
 * (`arn:aws:sts::ACCT:assumed-role/ROLE`), since each process gets a new one and the CLI, its agents
 * and its later runs would otherwise be different owners. A session name someone chose (SSO's is the
 * user's email) is kept: it tells apart the people sharing the role.
 */
export function normalizeOwner(arn: string): string {
  const m = /^(arn:[^:]+:sts::[^:]*:assumed-role\/[^/]+)\/([^/]+)$/.exec(arn);
  return m?.[1] !== undefined && GENERATED_SESSION.test(m[2] ?? '') ? m[1] : arn;
}

/**
 * Whether `owner` (of a run record; undefined in records older than owners) is someone other than
 * `me`. Both are normalized: records written before normalization may hold a generated session name.
 */
export function isOthers(owner: string | undefined, me: string): owner is string {
  return owner !== undefined && normalizeOwner(owner) !== normalizeOwner(me);
}

/**
 * Calls `f` at most once while it succeeds, sharing its promise with every caller (the caller
 * identity is asked for once per process); a failure is not remembered, so the next call tries again.
 */
export function once<T>(f: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | undefined;
  return () => {
    if (!p) {
      p = f();
      p.catch(() => (p = undefined));
    }
    return p;
  };
}
