import { expect } from 'chai';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { join } from 'node:path';
import { SecretsManagerStore, secretName } from '../../common/aws/secrets-manager.js';
import { SecretsManagerReader } from '../../common/aws/secrets-reader.js';
import { ConfigError, TransportError } from '../../common/errors.js';
import { sha256 } from '../../common/hash.js';
import { LocalSecretStore } from '../../common/local/local-secrets.js';
import { removeAll, tempDir } from '../support/cli.js';
import { SecretsManagerFake } from '../support/secrets-manager-fake.js';
import { secretStoreContract } from './secret-store-contract.js';

secretStoreContract('LocalSecretStore', async () => {
  const dir = tempDir('secret-store');
  return { store: new LocalSecretStore(join(dir, 'secrets')), cleanup: async () => removeAll(dir) };
});

function smStore(endpoint: string, o: { prefix?: string; maxAttempts?: number } = {}): SecretsManagerStore {
  const client = new SecretsManagerClient({
    region: 'us-east-1',
    endpoint,
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    ...(o.maxAttempts ? { maxAttempts: o.maxAttempts } : {}),
  });
  return new SecretsManagerStore({ client, prefix: o.prefix ?? 'dstack' });
}

// Small pages and a deletion AWS finishes in the background: the store must page and wait.
secretStoreContract('SecretsManagerStore on the wire (fake Secrets Manager)', async () => {
  const fake = new SecretsManagerFake({ pageSize: 5, deletionLagMs: 300 });
  const endpoint = await fake.start();
  return { store: smStore(endpoint), cleanup: () => fake.stop() };
});

describe('SecretsManagerStore: the Secrets Manager calls on the wire', function () {
  this.timeout(20_000);
  let fake: SecretsManagerFake;
  let endpoint: string;
  const repo = { repoId: 'https://github.com/acme/models.git' };
  beforeEach(async () => {
    fake = new SecretsManagerFake({ pageSize: 2 });
    endpoint = await fake.start();
  });
  afterEach(() => fake.stop());

  it('names secrets <prefix>/repos/<repo hash>/NAME and <prefix>/runs/<repo hash>/<run>/NAME', async () => {
    const store = smStore(endpoint, { prefix: 'team-a' });
    await store.put(repo, 'TOKEN', 'value-1');
    await store.put({ ...repo, runName: 'lazy-owl-1' }, 'PINNED', 'value-2');
    const h = sha256(repo.repoId);
    expect(fake.names()).to.deep.equal([`team-a/repos/${h}/TOKEN`, `team-a/runs/${h}/lazy-owl-1/PINNED`]);
    expect(secretName('team-a', repo, 'TOKEN')).to.equal(`team-a/repos/${h}/TOKEN`);
  });

  it('lists across pages with NextToken, filtered by the name prefix, and no request of list carries a value', async () => {
    const store = smStore(endpoint);
    const names = ['A', 'B', 'C', 'D', 'E', 'F', 'G'];
    for (const n of names) await store.put(repo, n, `value-of-${n}`);
    await store.put({ repoId: 'other' }, 'Z', 'value-z');
    expect(await store.list(repo)).to.deep.equal(names);
    const lists = fake.requests.filter((r) => r.op === 'ListSecrets');
    expect(lists).to.have.length(4);
    expect(lists.filter((r) => typeof r.body.NextToken === 'string')).to.have.length(3);
    expect(lists[0]?.body.Filters).to.deep.equal([{ Key: 'name', Values: [`dstack/repos/${sha256(repo.repoId)}/`] }]);
  });

  it('creates with CreateSecret, replaces with PutSecretValue, deletes without a recovery window', async () => {
    const store = smStore(endpoint);
    await store.put(repo, 'TOKEN', 'value-1', { ifAbsent: true });
    await store.put(repo, 'TOKEN', 'value-2');
    await store.delete(repo, 'TOKEN');
    expect(fake.requests.map((r) => r.op)).to.deep.equal(['CreateSecret', 'CreateSecret', 'PutSecretValue', 'GetSecretValue', 'DeleteSecret']);
    expect(fake.requests.at(-1)?.body).to.deep.include({ ForceDeleteWithoutRecovery: true });
  });

  it('says in one line which permission is missing, for a denied call', async () => {
    const store = smStore(endpoint);
    fake.inject('GetSecretValue', () => ({ status: 400, type: 'AccessDeniedException', message: 'User: arn:aws:sts::1:assumed-role/x is not authorized' }));
    const e = await store.get(repo, 'TOKEN').then(() => expect.fail('read a denied secret'), (x: unknown) => x as Error);
    expect(e).to.be.instanceOf(TransportError);
    expect(e.message).to.equal(
      `access denied to dstack/repos/${sha256(repo.repoId)}/TOKEN in Secrets Manager: the IAM policy needs secretsmanager:GetSecretValue on it (see ami/iam/)`,
    );
  });

  it('turns rejected credentials into a config error', async () => {
    const store = smStore(endpoint);
    fake.inject('ListSecrets', () => ({ status: 400, type: 'UnrecognizedClientException', message: 'The security token included in the request is invalid.' }));
    const e = await store.list(repo).then(() => expect.fail('listed'), (x: unknown) => x as Error);
    expect(e).to.be.instanceOf(ConfigError);
    expect(e.message).to.match(/^AWS rejected the credentials \(UnrecognizedClientException\) while trying to list the secrets under dstack\/repos\/[0-9a-f]{64}\/ in Secrets Manager/);
  });

  it('never puts the value in an error, even when the service echoes it', async () => {
    const store = smStore(endpoint, { maxAttempts: 1 });
    // A quote and a line break: AWS's echo of it is escaped (JSON), so cutting out the value as it is would miss it.
    const value = 'hun"ter2-Zq9\nvalue';
    const echo = (b: Record<string, unknown>) => ({ status: 400, type: 'ValidationException', message: `bad request: ${JSON.stringify(b)}` });
    fake.inject('CreateSecret', echo);
    const e1 = await store.put(repo, 'TOKEN', value).then(() => expect.fail('put'), (x: unknown) => x as Error);
    await store.put(repo, 'TOKEN', 'first-value');
    fake.inject('PutSecretValue', echo);
    const e2 = await store.put(repo, 'TOKEN', value).then(() => expect.fail('put'), (x: unknown) => x as Error);
    fake.inject('PutSecretValue', () => ({ status: 500, type: 'InternalServiceError', message: `boom ${value}` }));
    const e3 = await store.put(repo, 'TOKEN', value).then(() => expect.fail('put'), (x: unknown) => x as Error);
    for (const e of [e1, e2, e3]) {
      expect(e.message).to.match(/^Secrets Manager: cannot (create|update) secret dstack\/repos\/[0-9a-f]{64}\/TOKEN: /);
      expect(e.message).to.not.include('Zq9');
      expect(e.message).to.not.include(value);
      expect(e.message).to.not.include('\n');
      expect(e.cause).to.equal(undefined);
      expect(JSON.stringify(e)).to.not.include(value);
    }
    expect((e3 as TransportError).retryable).to.equal(true);
  });

  it('a missing secret is undefined and deleting it is false, though a forced DeleteSecret of a missing name succeeds', async () => {
    const store = smStore(endpoint);
    expect(await store.get(repo, 'NOPE')).to.equal(undefined);
    expect(await store.delete(repo, 'NOPE')).to.equal(false);
    expect(fake.requests.map((r) => r.op)).to.not.include('DeleteSecret');
  });

  it("the agent's reader reads by name with GetSecretValue and refuses to list, write or delete", async () => {
    await smStore(endpoint).put(repo, 'TOKEN', 'value-1');
    const client = new SecretsManagerClient({ region: 'us-east-1', endpoint, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
    const reader = new SecretsManagerReader({ client, prefix: 'dstack' });
    const before = fake.requests.length;
    expect(await reader.get(repo, 'TOKEN')).to.equal('value-1');
    expect(await reader.get(repo, 'NOPE')).to.equal(undefined);
    for (const call of [reader.list(), reader.put(), reader.delete()]) {
      const e = await (call as Promise<unknown>).then(() => expect.fail('a reader wrote'), (x: unknown) => x as Error);
      expect(e.message).to.equal('an agent only reads secrets: add, list and delete them with `dstack secrets`');
    }
    expect(fake.requests.slice(before).map((r) => r.op)).to.deep.equal(['GetSecretValue', 'GetSecretValue']);
  });
});
