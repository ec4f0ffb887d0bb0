import type { z } from 'zod';
import { DstackError } from '../errors.js';
import type { Store } from '../ports.js';

/** A stored record that is not what its schema says: not JSON, or missing or mistyped fields. Names the key. */
export class CorruptRecordError extends DstackError {
  readonly key: string;
  readonly detail: string;

  constructor(key: string, detail: string, options: { cause?: unknown; hint?: string } = {}) {
    super('CORRUPT', `corrupt record ${key}: ${detail}${options.hint === undefined ? '' : `; ${options.hint}`}`, options);
    this.key = key;
    this.detail = detail;
  }
}

/** Parses a stored JSON record with its schema; CorruptRecordError (naming the key) if it does not fit. */
export function parseRecord<S extends z.ZodType>(key: string, body: Buffer, schema: S): z.infer<S> {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new CorruptRecordError(key, `not JSON (${oneLine(e instanceof Error ? e.message : String(e))})`, { cause: e });
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const problems = parsed.error.issues.slice(0, 3).map((i) => `${i.path.length > 0 ? i.path.join('.') : '(record)'}: ${i.message}`);
    throw new CorruptRecordError(key, oneLine(problems.join('; ')));
  }
  return parsed.data;
}

/** Reads and parses one record; null if it does not exist, CorruptRecordError if it is damaged. */
export async function readRecord<S extends z.ZodType>(store: Store, key: string, schema: S): Promise<z.infer<S> | null> {
  const body = await store.get(key);
  return body ? parseRecord(key, body, schema) : null;
}

function oneLine(s: string): string {
  const line = s.replace(/\s+/g, ' ').trim();
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}
