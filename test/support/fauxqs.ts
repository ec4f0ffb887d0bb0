import { randomBytes } from 'node:crypto';
import { startFauxqs } from 'fauxqs';

/** A fauxqs server (SQS + S3) on a free loopback port, for one test file. */
export interface Emulator {
  endpoint: string;
  stop(): Promise<void>;
}

export async function startEmulator(): Promise<Emulator> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  process.env.AWS_ACCESS_KEY_ID ??= 'test';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'test';
  const server = await startFauxqs({ port: 0, logger: false, host: '127.0.0.1' });
  return { endpoint: server.address, stop: () => server.stop() };
}

/** A name no other test uses. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}
