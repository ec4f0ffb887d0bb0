import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { AwsConfig } from '../config.js';
import { ConfigError, TransportError, UsageError } from '../errors.js';
import { sha256 } from '../hash.js';
import { RUN_NAME_PATTERN } from '../names.js';
import { checkSecretName, type SecretScope, type SecretStore } from '../secrets.js';
import { awsCode, awsStatus, credentialsError } from './errors.js';

/**
 * Where the secrets live in Secrets Manager, all under one prefix (`aws.secretsPrefix`, by default
 * the queue prefix, so `dstack/…`), which is what the IAM policies in ami/iam/ grant:
 *
 *   <prefix>/repos/<sha256 of repoId>/NAME            a repo's secrets (`dstack secrets add`)
 *   <prefix>/runs/<sha256 of repoId>/<run>/NAME       the values of a run's bare env names
 *
 * The repo id is hashed as in the local store: it is a URL-ish string with characters Secrets
 * Manager names refuse, and the hash keeps the name short. Repo secrets and run values sit under
 * different branches so that listing a repo's secrets never pages through its runs' values.
 */
export function secretName(prefix: string, scope: SecretScope, name: string): string {
  return `${scopePrefix(prefix, scope)}${name}`;
}

export function scopePrefix(prefix: string, scope: SecretScope): string {
  const repo = sha256(scope.repoId);
  if (scope.runName === undefined) return `${prefix}/repos/${repo}/`;
  if (!RUN_NAME_PATTERN.test(scope.runName)) throw new UsageError(`not a run name: \`${scope.runName}\``);
  return `${prefix}/runs/${repo}/${scope.runName}/`;
}

/** A Secrets Manager client for the config's region (or `aws.endpoints.secretsmanager`). */
export function secretsManagerClient(aws: AwsConfig | undefined): SecretsManagerClient {
  const endpoint = aws?.endpoints?.secretsmanager;
  return new SecretsManagerClient({ region: aws?.region ?? 'us-east-1', ...(aws?.profile ? { profile: aws.profile } : {}), ...(endpoint ? { endpoint } : {}) });
}

/** The names' first segment: `aws.secretsPrefix`, by default the queue prefix. */
export function secretsPrefix(aws: AwsConfig | undefined): string {
  return aws?.secretsPrefix ?? aws?.queuePrefix ?? 'dstack';
}

/** Reads one secret by name: undefined when there is none (or it is marked for deletion). */
export async function getSecretValue(client: SecretsManagerClient, id: string): Promise<string | undefined> {
  try {
    const r = await client.send(new GetSecretValueCommand({ SecretId: id }));
    return r.SecretString;
  } catch (e) {
    // InvalidRequestException here means the secret is marked for deletion: for us it is gone.
    if (awsCode(e) === 'ResourceNotFoundException' || awsCode(e) === 'InvalidRequestException') return undefined;
    throw secretsManagerError(e, 'read secret', id, 'GetSecretValue');
  }
}

/**
 * What an agent holds: Secrets Manager, read only. An agent reads a job's secrets by the names in
 * its spec and never lists, writes or deletes; its role may only GetSecretValue under the prefix
 * (ami/iam/agent-policy.json), so this file is all of Secrets Manager the agent bundle contains,
 * and the other methods refuse at once rather than be denied by AWS.
 */
export class SecretsManagerReader implements SecretStore {
  constructor(private readonly o: { client: SecretsManagerClient; prefix: string }) {}

  async get(scope: SecretScope, name: string): Promise<string | undefined> {
    checkSecretName(name);
    return getSecretValue(this.o.client, secretName(this.o.prefix, scope, name));
  }

  put(): Promise<void> {
    return Promise.reject(readOnly());
  }

  list(): Promise<string[]> {
    return Promise.reject(readOnly());
  }

  delete(): Promise<boolean> {
    return Promise.reject(readOnly());
  }
}

function readOnly(): Error {
  return new UsageError('an agent only reads secrets: add, list and delete them with `dstack secrets`');
}

/** The agent's SecretStore on AWS. */
export function openSecretsReader(aws: AwsConfig | undefined): SecretsManagerReader {
  return new SecretsManagerReader({ client: secretsManagerClient(aws), prefix: secretsPrefix(aws) });
}

const RETRYABLE = /Throttling|InternalServiceError|ServiceUnavailable|RequestTimeout|ECONNRESET|ETIMEDOUT|EPIPE|TimeoutError/;

/**
 * One line for a failed call: what, which name, the AWS error code and, for calls that carried no
 * value, its message. The value is never in it, and the SDK error is not kept as `cause` (it could
 * carry the request), so `--debug` cannot print it either.
 */
export function secretsManagerError(e: unknown, what: string, id: string, action: string, value?: string): Error {
  const code = awsCode(e);
  const status = awsStatus(e);
  // A call that carried a value gives no AWS message at all: a service that echoes the request may
  // echo the value escaped or cut, which no search for the value itself would find.
  const message = value !== undefined ? '' : e instanceof Error ? (e.message.split('\n')[0] ?? '') : String(e);
  const credentials = credentialsError(e, { what: `${what} ${id} in Secrets Manager`, keepCause: false });
  if (credentials) return credentials;
  if (code === 'AccessDeniedException') {
    return new TransportError(`access denied to ${id} in Secrets Manager: the IAM policy needs secretsmanager:${action}${action === 'ListSecrets' ? '' : ' on it'} (see ami/iam/)`, {
      awsCode: code,
      ...(status === undefined ? {} : { statusCode: status }),
    });
  }
  const retryable = RETRYABLE.test(code) || (status !== undefined && status >= 500);
  return new TransportError(`Secrets Manager: cannot ${what} ${id}: ${code}${status ? ` (HTTP ${status})` : ''}${message && message !== code ? `: ${message}` : ''}`, {
    retryable,
    awsCode: code,
    ...(status === undefined ? {} : { statusCode: status }),
  });
}
