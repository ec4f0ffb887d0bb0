import {
  CreateSecretCommand,
  DeleteSecretCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
  paginateListSecrets,
} from '@aws-sdk/client-secrets-manager';
import pRetry from 'p-retry';
import type { AwsConfig } from '../config.js';
import { ConflictError } from '../errors.js';
import { checkSecretName, type SecretScope, type SecretStore } from '../secrets.js';
import { awsCode } from './errors.js';
import { getSecretValue, scopePrefix, secretName, secretsManagerClient, secretsManagerError as fail, secretsPrefix } from './secrets-reader.js';

export { secretName } from './secrets-reader.js';

/**
 * The CLI's SecretStore on AWS: Secrets Manager in the config's region (or at
 * `aws.endpoints.secretsmanager`), names under `aws.secretsPrefix`, by default the queue prefix.
 * (Agents get the read-only SecretsManagerReader.)
 */
export function openSecretsManager(aws: AwsConfig | undefined): SecretsManagerStore {
  return new SecretsManagerStore({ client: secretsManagerClient(aws), prefix: secretsPrefix(aws) });
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
    return getSecretValue(this.client, secretName(this.prefix, scope, name));
  }

  async put(scope: SecretScope, name: string, value: string, o: { ifAbsent?: boolean } = {}): Promise<void> {
    checkSecretName(name);
    const id = secretName(this.prefix, scope, name);
    try {
      await this.create(id, value);
      return;
    } catch (e) {
      if (awsCode(e) !== 'ResourceExistsException') throw fail(e, 'create secret', id, 'CreateSecret', value);
      if (o.ifAbsent) throw new ConflictError(`secret \`${name}\` exists: use \`dstack secrets update ${name}\``);
    }
    try {
      await this.client.send(new PutSecretValueCommand({ SecretId: id, SecretString: value }));
    } catch (e) {
      throw fail(e, 'update secret', id, 'PutSecretValue', value);
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
      throw fail(e, 'list the secrets under', prefix, 'ListSecrets');
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
      throw fail(e, 'delete secret', id, 'DeleteSecret');
    }
  }
}

