import { UsageError } from './errors.js';

/**
 * Where a secret belongs: a repo's named secrets (`dstack secrets add`), or one run's pinned values
 * of bare env names (`env: [WANDB_API_KEY]`), which `restart` reuses.
 */
export interface SecretScope {
  repoId: string;
  /** Set for the values pinned to one run. */
  runName?: string;
}

/**
 * The secret store port: values by name, per repo (and per run). The local backend keeps them as
 * files under DSTACK_HOME; the AWS backend keeps them in Secrets Manager under the queue prefix and
 * the repo (common/aws/secrets-manager.ts). Values never go to the Store, the queue or any record.
 */
export interface SecretStore {
  /** The value, or undefined when there is no such secret. */
  get(scope: SecretScope, name: string): Promise<string | undefined>;
  /** Creates or replaces a secret; `ifAbsent` refuses (ConflictError) one that exists. */
  put(scope: SecretScope, name: string, value: string, o?: { ifAbsent?: boolean }): Promise<void>;
  /** The names, sorted; never the values. */
  list(scope: SecretScope): Promise<string[]>;
  /** Removes a secret; false when there was none. */
  delete(scope: SecretScope, name: string): Promise<boolean>;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Secret names are environment variable names, since that is how a job sees them. */
export function checkSecretName(name: string): void {
  if (!NAME.test(name)) throw new UsageError(`secret \`${name}\`: a name is an environment variable name (letters, digits and "_", not starting with a digit)`);
}

/**
 * Values shorter than this are injected but not masked in the output: masking `1` or `ab` would
 * rewrite ordinary output everywhere and reveal the value by the pattern anyway.
 */
export const MIN_MASKED_BYTES = 4;

/**
 * A SecretStore that opens the real one on first use, so that commands that never touch secrets
 * (`ps`, `logs`) do not load its client.
 */
export function lazySecretStore(open: () => Promise<SecretStore>): SecretStore {
  let opened: Promise<SecretStore> | undefined;
  const store = (): Promise<SecretStore> => (opened ??= open());
  return {
    get: async (scope, name) => (await store()).get(scope, name),
    put: async (scope, name, value, o) => (await store()).put(scope, name, value, o),
    list: async (scope) => (await store()).list(scope),
    delete: async (scope, name) => (await store()).delete(scope, name),
  };
}
