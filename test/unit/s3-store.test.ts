import { expect } from 'chai';
import { Readable } from 'node:stream';
import { GetObjectCommand, S3Client, type GetObjectCommandOutput } from '@aws-sdk/client-s3';
import { mockClient } from 'aws-sdk-client-mock';
import { S3Store } from '../../common/aws/s3-store.js';
import { TransportError } from '../../common/errors.js';

/** A GetObject answer whose body is `body` while its Content-Length says `length`. */
function answer(body: Buffer, length: number): GetObjectCommandOutput {
  const stream = Readable.from([body.subarray(0, body.length >> 1), body.subarray(body.length >> 1)]);
  // What the SDK's own body adds; the store may use either.
  const sdkBody = Object.assign(stream, { transformToByteArray: async () => body });
  return { $metadata: {}, ContentLength: length, Body: sdkBody } as unknown as GetObjectCommandOutput;
}

describe('S3Store reads', () => {
  const s3 = new S3Client({ region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } });
  const mock = mockClient(s3);
  afterEach(() => mock.reset());
  after(() => mock.restore());

  it('a blob whose connection drops before its Content-Length is read again, not handed on short', async () => {
    const blob = Buffer.from('0123456789abcdef'.repeat(1024));
    mock.on(GetObjectCommand).resolvesOnce(answer(blob.subarray(0, 5000), blob.length)).callsFake(() => answer(blob, blob.length));
    const store = new S3Store({ s3, bucket: 'b', retries: 2 });
    const got = await store.get('blobs/x');
    expect(got?.equals(blob)).to.equal(true);
    expect(mock.commandCalls(GetObjectCommand)).to.have.length(2);
  });

  it('a body that stays short on every try fails as a retryable transport error', async () => {
    const blob = Buffer.from('x'.repeat(4096));
    mock.on(GetObjectCommand).callsFake(() => answer(blob.subarray(0, 100), blob.length));
    const store = new S3Store({ s3, bucket: 'b', retries: 1 });
    const e = await store.get('blobs/y').then(() => undefined, (err: unknown) => err);
    expect(e).to.be.instanceOf(TransportError);
    expect((e as TransportError).retryable).to.equal(true);
    expect((e as Error).message).to.match(/ended after 100 of 4096 bytes/);
  });
});
