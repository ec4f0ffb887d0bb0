import { DstackError } from './errors.js';

/** Rejects store keys that could escape a prefix or a directory: empty, absolute, `.` or `..` segments. */
export function checkKey(key: string): string {
  const parts = key.split('/');
  if (key.length === 0 || parts.some((p) => p === '' || p === '.' || p === '..') || key.includes('\0')) {
    throw new DstackError('INTERNAL', `invalid store key '${key}'`);
  }
  return key;
}
