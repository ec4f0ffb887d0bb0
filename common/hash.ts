import { createHash } from 'node:crypto';

/** Hex sha256 of some bytes or text. */
export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}
