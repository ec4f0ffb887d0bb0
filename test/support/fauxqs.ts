import { randomBytes } from 'node:crypto';
import { startFauxqs } from 'fauxqs';
import { S3Proxy } from './s3-proxy.js';

/** A fauxqs server (SQS + S3 + STS) on a free loopback port, for one test file. */
export interface Emulator {
  /**
   * fauxqs behind the S3 proxy (test/support/s3-proxy.ts), which adds the conditional PUT that fauxqs
   * 1.9 ignores and real S3 has: without it two runs could be created under one name.
   */
  endpoint: string;
  /** fauxqs itself. */
  raw: string;
  stop(): Promise<void>;
}

export async function startEmulator(): Promise<Emulator> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  process.env.AWS_ACCESS_KEY_ID ??= 'test';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'test';
  const server = await startFauxqs({ port: 0, logger: false, host: '127.0.0.1' });
  const proxy = new S3Proxy(server.address);
  const endpoint = await proxy.start();
  return {
    endpoint,
    raw: server.address,
    stop: async () => {
      await proxy.stop();
      await server.stop();
    },
  };
}

/** A name no other test uses. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}
