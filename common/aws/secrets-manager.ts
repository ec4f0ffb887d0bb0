import {
  CreateSecretCommand,
  DeleteSecretCommand,
  GetSecretValueCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
  paginateListSecrets,
} from '@aws-sdk/client-secrets-manager';
import pRetry from 'p-retry';
import type { AwsConfig } from '../config.js';
import { ConfigError, ConflictError, TransportError, UsageError } from '../errors.js';
import { sha256 } from '../hash.js';
import { RUN_NAME_PATTERN } from '../names.js';
import { checkSecretName, type SecretScope, type SecretStore } from '../secrets.js';
import { awsCode, awsStatus } from './errors.js';

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

function scopePrefix(prefix: string, scope: SecretScope): string {
  const repo = sha256(scope.repoId);
  if (scope.runName === undefined) return `${prefix}/repos/${repo}/`;
  if (!RUN_NAME_PATTERN.test(scope.runName)) throw new UsageError(`not a run name: \`${scope.runName}\``);
  return `${prefix}/runs/${repo}/${scope.runName}/`;
}

/**
 * The AWS backend's SecretStore: Secrets Manager in the config's region (or at
 * `aws.endpoints.secretsmanager`), names under `aws.secretsPrefix`, by default the queue prefix.
 */
export function openSecretsManager(aws: AwsConfig | undefined): SecretsManagerStore {
  const endpoint = aws?.endpoints?.secretsmanager;
  const client = new SecretsManagerClient({ region: aws?.region ?? 'us-east-1', ...(aws?.profile ? { profile: aws.profile } : {}), ...(endpoint ? { endpoint } : {}) });
  return new SecretsManagerStore({ client, prefix: aws?.secretsPrefix ?? aws?.queuePrefix ?? 'dstack' });
}

/**
 * The SecretStore port on AWS Secrets Manager: one secret per value, named as `secretName` says.
 * Values go out only in CreateSecret and PutSecretValue and come back only from GetSecretValue;
 * `list` uses ListSecrets, which returns names and never values. A failed call is one line that
 * names the secret and the AWS error, never the value (see `fail`).
 *
 * ListSecrets is eventually consistent (AWS: it may not show changes from the last few minutes);
 * `get`, `put` and `delete` go by name and see every change at once.
 */
export class SecretsManagerStore implements SecretStore {
  private readonly client: SecretsManagerClient;
  private readonly prefix: string;
  /** How long a CreateSecret keeps retrying a name whose forced deletion AWS is still finishing. */
  private readonly recreateRetries: number;

  constructor(o: { client: SecretsManagerClient; prefix: string; recreateRetries?: number }) {
    this.client = o.client;
    this.prefix = o.prefix;
    this.recreateRetries = o.recreateRetries ?? 6;
  }

  async get(scope: SecretScope, name: string): Promise<string | undefined> {
    checkSecretName(name);
    const id = secretName(this.prefix, scope, name);
    try {
      const r = await this.client.send(new GetSecretValueCommand({ SecretId: id }));
      return r.SecretString;
    } catch (e) {
      // InvalidRequestException here means the secret is marked for deletion: for us it is gone.
      if (awsCode(e) === 'ResourceNotFoundException' || awsCode(e) === 'InvalidRequestException') return undefined;
      throw fail(e, 'read', id, 'GetSecretValue');
    }
  }

  async put(scope: SecretScope, name: string, value: string, o: { ifAbsent?: boolean } = {}): Promise<void> {
    checkSecretName(name);
    const id = secretName(this.prefix, scope, name);
    try {
      await this.create(id, value);
      return;
    } catch (e) {
      if (awsCode(e) !== 'ResourceExistsException') throw fail(e, 'create', id, 'CreateSecret', value);
      if (o.ifAbsent) throw new ConflictError(`secret \`${name}\` exists: use \`dstack secrets update ${name}\``);
    }
    try {
      await this.client.send(new PutSecretValueCommand({ SecretId: id, SecretString: value }));
    } catch (e) {
      throw fail(e, 'update', id, 'PutSecretValue', value);
    }
  }

  /**
   * CreateSecret, retried while the name is still being deleted: a forced deletion finishes in the
   * background, and until it has, CreateSecret of the same name answers InvalidRequestException.
   */
  private async create(id: string, value: string): Promise<void> {
    await pRetry(() => this.client.send(new CreateSecretCommand({ Name: id, SecretString: value })), {
      retries: this.recreateRetries,
      minTimeout: 100,
      maxTimeout: 2000,
      shouldRetry: (e) => awsCode(e) === 'InvalidRequestException',
    });
  }

  async list(scope: SecretScope): Promise<string[]> {
    const prefix = scopePrefix(this.prefix, scope);
    const names: string[] = [];
    try {
      for await (const page of paginateListSecrets({ client: this.client }, { Filters: [{ Key: 'name', Values: [prefix] }], MaxResults: 100 })) {
        for (const s of page.SecretList ?? []) {
          const rest = s.Name?.startsWith(prefix) ? s.Name.slice(prefix.length) : undefined;
          // The filter is a prefix match; a deeper name (or one a person made by hand) is not ours.
          if (rest !== undefined && /^[A-Za-z_][A-Za-z0-9_]*$/.test(rest)) names.push(rest);
        }
      }
    } catch (e) {
      throw fail(e, 'list', `${prefix}*`, 'ListSecrets');
    }
    return names.sort();
  }

  async delete(scope: SecretScope, name: string): Promise<boolean> {
    checkSecretName(name);
    const id = secretName(this.prefix, scope, name);
    // A forced DeleteSecret of a missing name succeeds, so whether there was one is asked first.
    if ((await this.get(scope, name)) === undefined) return false;
    try {
      // Without recovery: a deleted secret otherwise stays "scheduled for deletion" for 7 to 30
      // days, and in that time CreateSecret of the same name fails, so `secrets delete X` then
      // `secrets add X`, or a run name's values after `rm`, could not be written again.
      await this.client.send(new DeleteSecretCommand({ SecretId: id, ForceDeleteWithoutRecovery: true }));
      return true;
    } catch (e) {
      if (awsCode(e) === 'ResourceNotFoundException') return false;
      throw fail(e, 'delete', id, 'DeleteSecret');
    }
  }
}

const CREDENTIALS = /InvalidClientTokenId|UnrecognizedClientException|InvalidSignatureException|SignatureDoesNotMatch|CredentialsProviderError|ExpiredToken/;
const RETRYABLE = /Throttling|InternalServiceError|ServiceUnavailable|RequestTimeout|ECONNRESET|ETIMEDOUT|EPIPE|TimeoutError/;

/**
 * One line for a failed call: what, which name, the AWS error code and its message. The value is
 * never in it: it is cut out of AWS's message if a service ever echoes it, and the SDK error is not
 * kept as `cause` (it could carry the request), so `--debug` cannot print it either.
 */
function fail(e: unknown, what: string, id: string, action: string, value?: string): Error {
  const code = awsCode(e);
  const status = awsStatus(e);
  let message = e instanceof Error ? e.message.split('\n')[0] ?? '' : String(e);
  if (value) message = message.split(value).join('***');
  if (CREDENTIALS.test(code)) {
    return new ConfigError(`AWS rejected the credentials (${code}) while trying to ${what} secret ${id} in Secrets Manager: check \`aws configure\` or run \`dstack config\``);
  }
  if (code === 'AccessDeniedException') {
    return new TransportError(`access denied to secret ${id} in Secrets Manager: the IAM policy needs secretsmanager:${action} on it (see ami/iam/)`, {
      awsCode: code,
      ...(status === undefined ? {} : { statusCode: status }),
    });
  }
  const retryable = RETRYABLE.test(code) || (status !== undefined && status >= 500);
  return new TransportError(`Secrets Manager: cannot ${what} secret ${id}: ${code}${status ? ` (HTTP ${status})` : ''}${message && message !== code ? `: ${message}` : ''}`, {
    retryable,
    awsCode: code,
    ...(status === undefined ? {} : { statusCode: status }),
  });
}
