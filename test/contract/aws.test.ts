import { DeleteQueueCommand } from '@aws-sdk/client-sqs';
import { S3Store } from '../../common/aws/s3-store.js';
import { ensureAws } from '../../common/aws/provision.js';
import { awsClients, type AwsSettings } from '../../common/aws/setup.js';
import { SqsQueue } from '../../common/aws/sqs-queue.js';
import { startEmulator, uniqueName, type Emulator } from '../support/fauxqs.js';
import { S3Proxy } from '../support/s3-proxy.js';
import { queueContract } from './queue-contract.js';
import { storeContract } from './store-contract.js';

let emulator: Emulator;
let proxy: S3Proxy;
let s3Endpoint: string;
before(async () => {
  emulator = await startEmulator();
  proxy = new S3Proxy(emulator.endpoint);
  s3Endpoint = await proxy.start();
});
after(async () => {
  await proxy.stop();
  await emulator.stop();
});

function settings(): AwsSettings {
  return {
    region: 'us-east-1',
    bucket: uniqueName('bucket'),
    queuePrefix: uniqueName('q'),
    endpoints: { sqs: emulator.endpoint, s3: s3Endpoint },
    maxReceives: 2,
  };
}

queueContract('SqsQueue on fauxqs', async () => {
  const s = settings();
  const clients = awsClients(s);
  const { queueUrl, dlqUrl } = await ensureAws(clients, s);
  const claims = new S3Store({ s3: clients.s3, bucket: s.bucket });
  const open = (): SqsQueue => new SqsQueue({ sqs: clients.sqs, queueUrl, dlqUrl, claims });
  return {
    queue: open(),
    reopen: open,
    cleanup: async () => {
      for (const QueueUrl of [queueUrl, dlqUrl]) await clients.sqs.send(new DeleteQueueCommand({ QueueUrl })).catch(() => undefined);
    },
  };
});

storeContract('S3Store on fauxqs', async () => {
  const s = settings();
  const clients = awsClients(s);
  await ensureAws(clients, s);
  return { store: new S3Store({ s3: clients.s3, bucket: s.bucket, prefix: 'dstack/' }), cleanup: async () => undefined };
});
