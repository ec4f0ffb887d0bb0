import { expect } from 'chai';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { S3Store } from '../../common/aws/s3-store.js';
import { createRun, type RunRecord } from '../../common/runs.js';
import type { JobSpec } from '../../common/spec/job-spec.js';
import { startEmulator, uniqueName, type Emulator } from '../support/fauxqs.js';

describe('the fauxqs emulator the AWS tests share behaves like S3 where dstack relies on it', () => {
  let emulator: Emulator;
  before(async () => {
    emulator = await startEmulator();
  });
  after(async () => {
    await emulator.stop();
  });

  it('never gives two runs one name: a run record is created only if absent (If-None-Match), so the second of one stem is -2', async () => {
    const s3 = new S3Client({ region: 'us-east-1', endpoint: emulator.endpoint, forcePathStyle: true });
    const bucket = uniqueName('names');
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    const store = new S3Store({ s3, bucket, prefix: 'dstack/' });
    const make = (jobId: string) => (runName: string): RunRecord =>
      ({ runName, repoId: 'r', workflow: 'w', jobId, submittedAt: new Date().toISOString(), maxAttempts: 3, spec: {} as JobSpec, overrides: [], toolVersion: 'test' }) as RunRecord;
    // The same random draw twice: the same stem.
    const a = await createRun(store, make('j1'), () => 0);
    const b = await createRun(store, make('j2'), () => 0);
    expect(a.runName).to.match(/-1$/);
    expect(b.runName).to.equal(a.runName.replace(/-1$/, '-2'));
  });
});
