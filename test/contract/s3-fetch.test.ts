import { expect } from 'chai';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHUNK_BYTES, blobKey, sha256 } from '../../common/artifacts/manifest.js';
import { restoreTree } from '../../common/artifacts/restore.js';
import { saveTree } from '../../common/artifacts/save.js';
import { ensureAws } from '../../common/aws/provision.js';
import { awsClients, type AwsSettings } from '../../common/aws/setup.js';
import { S3Store } from '../../common/aws/s3-store.js';
import { TransportError } from '../../common/errors.js';
import type { S3Client } from '@aws-sdk/client-s3';
import { startEmulator, uniqueName, type Emulator } from '../support/fauxqs.js';
import { S3Proxy } from '../support/s3-proxy.js';

// A restore from S3 fetches each chunk with a presigned GET on a worker thread (common/artifacts/fetch-pool.ts):
// on the wire, through a proxy that injects S3's failures.
describe('S3Store: chunks fetched into the file on the fetching threads', function () {
  this.timeout(60_000);
  let emulator: Emulator;
  let proxy: S3Proxy;
  let store: S3Store;
  let s3: S3Client;
  let dir: string;
  let big: Buffer;
  let manifestSha: string;
  const second = (): string => sha256(big.subarray(CHUNK_BYTES, 2 * CHUNK_BYTES));
  const isBlobGet = (key: string) => (req: { method?: string | undefined; url?: string | undefined }): boolean => req.method === 'GET' && (req.url ?? '').includes(key);

  before(async () => {
    emulator = await startEmulator();
    proxy = new S3Proxy(emulator.endpoint);
    const endpoint = await proxy.start();
    const s: AwsSettings = { region: 'us-east-1', bucket: uniqueName('fetch'), queuePrefix: uniqueName('q'), endpoints: { sqs: emulator.raw, s3: endpoint }, maxReceives: 3 };
    const clients = awsClients(s);
    await ensureAws(clients, s);
    s3 = clients.s3;
    store = new S3Store({ s3, bucket: s.bucket, prefix: 'dstack/', retries: 2 });
    dir = mkdtempSync(join(tmpdir(), 'dstack-s3-fetch-'));
    big = randomBytes(CHUNK_BYTES * 2 + 999);
    mkdirSync(join(dir, 'src'));
    writeFileSync(join(dir, 'src', 'model.bin'), big);
    manifestSha = (await saveTree(store, join(dir, 'src'))).manifestSha;
  });
  after(async () => {
    rmSync(dir, { recursive: true, force: true });
    await proxy.stop();
    await emulator.stop();
  });
  beforeEach(() => {
    proxy.clearFaults();
    proxy.requests = [];
    proxy.injected = 0;
  });
  const first = (): string => sha256(big.subarray(0, CHUNK_BYTES));

  it('GETs each chunk once with a URL signed for the host header only, and restores the file byte for byte', async () => {
    await restoreTree(store, manifestSha, join(dir, 'plain'));
    expect(readFileSync(join(dir, 'plain', 'model.bin')).equals(big)).to.equal(true);
    const gets = proxy.requests.filter((r) => r.method === 'GET' && r.path.includes('/blobs/'));
    expect(gets).to.have.length(3);
    for (const g of gets) {
      const q = new URLSearchParams(g.query);
      // Real S3 checks the signature: a plain GET can send only what was signed.
      expect(q.get('X-Amz-SignedHeaders')).to.equal('host');
      expect(q.get('X-Amz-Expires')).to.equal('900');
      expect(q.get('X-Amz-Signature')).to.match(/^[0-9a-f]{64}$/);
    }
  });

  it("signs at S3's clock as the SDK learnt it from S3's answers (an agent whose clock is off would have its GETs refused as expired)", async () => {
    // S3's clock two hours ahead of this machine's: the SDK corrects its offset from the Date of the manifest's GET.
    const offsetMs = 2 * 3600_000;
    proxy.dateOffsetMs = offsetMs;
    try {
      await restoreTree(store, manifestSha, join(dir, 'skewed'));
    } finally {
      proxy.dateOffsetMs = 0;
      s3.config.systemClockOffset = 0;
    }
    const gets = proxy.requests.filter((r) => r.method === 'GET' && r.path.includes('/blobs/'));
    expect(gets).to.have.length(3);
    for (const g of gets) {
      const stamp = new URLSearchParams(g.query).get('X-Amz-Date') ?? '';
      const signedAt = Date.parse(stamp.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, '$1-$2-$3T$4:$5:$6Z'));
      expect(Math.abs(signedAt - (Date.now() + offsetMs))).to.be.below(60_000);
    }
  });

  for (const fault of ['drop', 'cut', '500'] as const) {
    it(`a chunk whose GET fails (${fault}) is fetched again, and the file comes back whole`, async () => {
      proxy.inject(fault, 1, isBlobGet(second()));
      const out = join(dir, `after-${fault}`);
      await restoreTree(store, manifestSha, out);
      expect(proxy.injected).to.equal(1);
      expect(proxy.requests.filter((r) => r.method === 'GET' && r.path.endsWith(second()))).to.have.length(2);
      expect(readFileSync(join(out, 'model.bin')).equals(big)).to.equal(true);
    });
  }

  it('AccessDenied fails at once, in one line that names the blob and carries no part of the signed URL', async () => {
    proxy.inject('403', 1, isBlobGet(second()));
    const err = await restoreTree(store, manifestSha, join(dir, 'denied')).then(() => undefined, (e: unknown) => e);
    expect(err).to.be.instanceOf(TransportError);
    const message = (err as Error).message;
    expect(message).to.equal(`S3 get ${blobKey(second())}: AccessDenied (HTTP 403): injected`);
    expect(message).to.not.match(/\?|127\.0\.0\.1|X-Amz|Signature/);
    expect((err as TransportError).retryable).to.equal(false);
    expect(proxy.requests.filter((r) => r.method === 'GET' && r.path.endsWith(second()))).to.have.length(1);
  });

  it('a failed restore stops the GETs still under way instead of waiting out their retries (a stalled one would wait 60 s a try)', async () => {
    proxy.inject('stall', 1, isBlobGet(first()));
    proxy.inject('403', 1, isBlobGet(second()));
    const started = Date.now();
    const err = await restoreTree(store, manifestSha, join(dir, 'stalled')).then(() => undefined, (e: unknown) => e);
    expect((err as Error).message).to.equal(`S3 get ${blobKey(second())}: AccessDenied (HTTP 403): injected`);
    expect(Date.now() - started).to.be.below(10_000);
    expect(proxy.injected).to.equal(2);
    // The stalled GET was not tried again.
    expect(proxy.requests.filter((r) => r.method === 'GET' && r.path.endsWith(first()))).to.have.length(1);
  });

  it('a chunk that stays broken fails the restore as a retryable transport error once its tries are spent', async () => {
    proxy.inject('cut', 3, isBlobGet(second()));
    const err = await restoreTree(store, manifestSha, join(dir, 'broken')).then(() => undefined, (e: unknown) => e);
    expect(err).to.be.instanceOf(TransportError);
    expect((err as TransportError).retryable).to.equal(true);
    expect((err as Error).message).to.not.match(/X-Amz|Signature/);
    expect(proxy.injected).to.equal(3);
  });
});
