import { JobFailedError } from '../common/errors.js';
import { MIN_MASKED_BYTES, type SecretStore } from '../common/secrets.js';
import type { JobSpec } from '../common/spec/job-spec.js';

const MASK = Buffer.from('***');

/**
 * The secrets a job gets as env vars: the repo's named secrets (those named in the spec, with their
 * values now; one deleted since is left out), then the values pinned to this run for its bare env
 * names (which win: the workflow asked for them by name). A pinned value that is gone fails the
 * job, naming the variable only. Only `get` is called: on EC2 the agent may read, not list.
 */
export async function fetchSecrets(store: Pick<SecretStore, 'get'>, spec: JobSpec): Promise<Record<string, string>> {
  const env: Record<string, string> = {};
  const repo = { repoId: spec.repoId };
  for (const name of spec.secretNames ?? []) {
    const value = await store.get(repo, name);
    if (value !== undefined) env[name] = value;
  }
  const run = { repoId: spec.repoId, runName: spec.runName };
  for (const name of spec.runSecrets ?? []) {
    const value = await store.get(run, name);
    if (value === undefined) throw new JobFailedError(`the value of \`${name}\` pinned to run ${spec.runName} is gone from the secret store: run the workflow again`);
    env[name] = value;
  }
  return env;
}

/**
 * Replaces every secret value in a byte stream with `***`, and changes nothing else. Overlapping
 * matches (of one value or of several) become one `***`. A value split across two writes is still
 * found: the longest end of what came in that could begin a value is held back until more bytes
 * come or `end()` is called. Values under MIN_MASKED_BYTES are not masked (see README).
 */
export class Masker {
  private readonly secrets: Buffer[] = [];
  private held: Buffer = Buffer.alloc(0);

  constructor(values: Iterable<string>) {
    for (const v of values) this.add(v);
  }

  /**
   * Masks one more value from the next write on: a credential dstack makes for the run once the job
   * has started (a dev environment's token, say). Bytes already returned stay as they were, so add
   * a value before anything can print it.
   */
  add(value: string): void {
    const bytes = Buffer.from(value, 'utf8');
    if (bytes.length < MIN_MASKED_BYTES || this.secrets.some((s) => s.equals(bytes))) return;
    this.secrets.push(bytes);
  }

  /** The bytes that can be shipped now, masked. */
  write(data: Buffer): Buffer {
    if (this.secrets.length === 0) return data;
    const buf = this.held.length === 0 ? data : Buffer.concat([this.held, data]);
    const intervals = matches(buf, this.secrets);
    let cut = buf.length - this.partialTail(buf);
    // A match that runs into the held tail might grow with the next bytes (an overlapping value): hold it whole.
    for (const [s, e] of intervals) if (s < cut && e > cut) cut = s;
    this.held = Buffer.from(buf.subarray(cut));
    return replace(buf.subarray(0, cut), intervals.filter(([, e]) => e <= cut));
  }

  /** The held bytes, masked: the stream has ended. */
  end(): Buffer {
    const buf = this.held;
    this.held = Buffer.alloc(0);
    return replace(buf, matches(buf, this.secrets));
  }

  /** How many bytes at the end of `buf` are a proper prefix of some value. */
  private partialTail(buf: Buffer): number {
    let longest = 0;
    for (const secret of this.secrets) {
      for (let n = Math.min(secret.length - 1, buf.length); n > longest; n--) {
        if (buf.subarray(buf.length - n).equals(secret.subarray(0, n))) {
          longest = n;
          break;
        }
      }
    }
    return longest;
  }
}

/** Every occurrence of every value, overlapping ones included, merged into sorted disjoint [start, end) intervals. */
function matches(buf: Buffer, secrets: Buffer[]): Array<[number, number]> {
  const found: Array<[number, number]> = [];
  for (const secret of secrets) {
    for (let at = buf.indexOf(secret); at >= 0; at = buf.indexOf(secret, at + 1)) found.push([at, at + secret.length]);
  }
  found.sort((a, b) => a[0] - b[0]);
  const merged: Array<[number, number]> = [];
  for (const [s, e] of found) {
    const last = merged[merged.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else merged.push([s, e]);
  }
  return merged;
}

function replace(buf: Buffer, intervals: Array<[number, number]>): Buffer {
  if (intervals.length === 0) return Buffer.from(buf);
  const parts: Buffer[] = [];
  let at = 0;
  for (const [s, e] of intervals) {
    parts.push(buf.subarray(at, s), MASK);
    at = e;
  }
  parts.push(buf.subarray(at));
  return Buffer.concat(parts);
}
