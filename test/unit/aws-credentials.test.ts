import { expect } from 'chai';
import { join } from 'node:path';
import { ConfigError } from '../../common/errors.js';
import { callerArn } from '../../common/aws/identity.js';
import { secretsManagerError } from '../../common/aws/secrets-reader.js';
import { explain } from '../../common/aws/setup.js';
import { removeAll, tempDir } from '../support/cli.js';

const NONE_FOUND = /^no AWS credentials found( for profile `[^`]+`)? while trying to [^\n]+: run `aws configure`, or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/;

/** What the SDK throws when no provider in its chain finds credentials. */
function noneFound(): Error {
  const e = new Error('Could not load credentials from any providers');
  e.name = 'CredentialsProviderError';
  return e;
}

describe('AWS credentials: one line says none were found, in every place that calls AWS', () => {
  it('STS (who owns the runs), with the real SDK and a profile that does not exist', async () => {
    const dir = tempDir('nocreds');
    const names = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE', 'AWS_CONFIG_FILE', 'AWS_SHARED_CREDENTIALS_FILE', 'AWS_EC2_METADATA_DISABLED'] as const;
    const saved = names.map((n) => [n, process.env[n]] as const);
    try {
      for (const n of names) delete process.env[n];
      process.env.AWS_CONFIG_FILE = join(dir, 'config');
      process.env.AWS_SHARED_CREDENTIALS_FILE = join(dir, 'credentials');
      process.env.AWS_EC2_METADATA_DISABLED = 'true';
      const err = await callerArn({ region: 'us-east-1', profile: 'nobody', endpoint: 'http://127.0.0.1:9' }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(ConfigError);
      expect((err as Error).message).to.match(NONE_FOUND).and.contain('for profile `nobody` while trying to ask STS who you are');
    } finally {
      for (const [n, v] of saved) {
        if (v === undefined) delete process.env[n];
        else process.env[n] = v;
      }
      removeAll(dir);
    }
  });

  it('Secrets Manager and the bucket and queues say the same', () => {
    const sm = secretsManagerError(noneFound(), 'list secrets under', 'dstack/x', 'ListSecrets');
    expect(sm).to.be.instanceOf(ConfigError);
    expect(sm.message).to.match(NONE_FOUND).and.contain('while trying to list secrets under dstack/x in Secrets Manager');
    const setup = explain(noneFound(), { region: 'us-east-1', bucket: 'b', queuePrefix: 'q', maxReceives: 3 }, 'open bucket b');
    expect(setup.message).to.match(NONE_FOUND);
  });
});
