import { Readable } from 'node:stream';
import {
  CopyObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  paginateListObjectsV2,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import pRetry from 'p-retry';
import { ConflictError, NotFoundError, TransportError } from '../errors.js';
import { checkKey } from '../keys.js';
import type { ListOptions, ObjectInfo, Store } from '../ports.js';
import { awsCode, awsStatus, retryableCode, wrapAws } from './errors.js';
import { fetchInto } from '../artifacts/fetch-pool.js';

const MIN_PART_BYTES = 8 * 1024 * 1024;
const MAX_PARTS = 10_000;
/** How long a presigned GET stays valid: it is signed just before it is sent, used once, and kept in memory only. */
const PRESIGNED_SEC = 900;
/**
 * Network failures that a new connection may not meet, beyond those retryableCode already knows
 * (ECONNRESET, EPIPE, ETIMEDOUT, ECONNREFUSED); a DNS name that does not exist or a TLS failure will.
 */
const NET_RETRYABLE = new Set(['ECONNABORTED', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH', 'UND_ERR_SOCKET']);
/** Up to this size a streamed body is buffered and sent as one PutObject. */
const SINGLE_PUT_MAX_BYTES = MIN_PART_BYTES;

/**
 * The <Message> of an S3 error body ("Request has expired"), as one line of at most 200 characters;
 * the elements that quote the request (StringToSign, CanonicalRequest) are separate and left out.
 */
function s3Message(xml: string): string | undefined {
  const raw = /<Message>([^<]*)<\/Message>/.exec(xml)?.[1];
  if (!raw) return undefined;
  const entities: Record<string, string> = { '&quot;': '"', '&apos;': "'", '&lt;': '<', '&gt;': '>', '&amp;': '&' };
  const line = raw.replace(/&(quot|apos|lt|gt|amp);/g, (m) => entities[m] ?? m).replace(/\s+/g, ' ').trim();
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

/** Whether an S3 error says the object is not there. */
function isMissing(e: unknown): boolean {
  const code = awsCode(e);
  return awsStatus(e) === 404 || code === 'NotFound' || code === 'NoSuchKey';
}

/**
 * Reads a response body into `out` (of at least `sizeBytes`, its Content-Length) as it arrives, so
 * that each byte is copied once (the SDK's transformToByteArray gathers the chunks and then copies
 * them all). A body shorter or longer than announced is a broken transfer: retryable.
 */
async function readBodyInto(body: Readable, out: Buffer, sizeBytes: number): Promise<void> {
  let at = 0;
  for await (const c of body) {
    const chunk = c as Buffer;
    if (at + chunk.length > sizeBytes) {
      body.destroy();
      throw new TransportError(`S3 get: the body is longer than its Content-Length (${sizeBytes} bytes)`, { retryable: true });
    }
    chunk.copy(out, at);
    at += chunk.length;
  }
  if (at !== sizeBytes) throw new TransportError(`S3 get: the body ended after ${at} of ${sizeBytes} bytes`, { retryable: true });
}

/** A response body as one buffer, sized from Content-Length when S3 sent it. */
export async function readBody(body: Readable, sizeBytes: number | undefined): Promise<Buffer> {
  if (sizeBytes === undefined) {
    const chunks: Buffer[] = [];
    for await (const c of body) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }
  const out = Buffer.allocUnsafe(sizeBytes);
  await readBodyInto(body, out, sizeBytes);
  return out;
}

/** Multipart part size: at least 8 MiB, and large enough that the object fits in 10,000 parts. */
export function partSizeFor(sizeBytes: number | undefined): number {
  if (!sizeBytes) return MIN_PART_BYTES;
  const needed = Math.ceil(sizeBytes / MAX_PARTS);
  return Math.max(MIN_PART_BYTES, Math.ceil(needed / (1024 * 1024)) * 1024 * 1024);
}

export interface S3StoreOptions {
  s3: S3Client;
  bucket: string;
  /** Key prefix inside the bucket, e.g. `dstack/`. */
  prefix?: string;
  /** Parts uploaded at once by a multipart upload. */
  queueSize?: number;
  retries?: number;
}

/**
 * The Store on S3. Puts are single PUTs (atomic by nature); streams go through lib-storage's
 * multipart Upload, which makes the object visible only when it completes. Create-if-absent uses
 * a conditional PUT (If-None-Match: *). Retryable failures are retried with backoff.
 */
export class S3Store implements Store {
  private readonly s3: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;

  constructor(private readonly o: S3StoreOptions) {
    this.s3 = o.s3;
    this.bucket = o.bucket;
    this.prefix = o.prefix ?? '';
  }

  private key(key: string): string {
    return this.prefix + checkKey(key);
  }

  private retry<T>(what: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return pRetry(
      async () => {
        try {
          return await fn();
        } catch (e) {
          throw e instanceof TransportError || e instanceof ConflictError || e instanceof NotFoundError ? e : wrapAws(e, what);
        }
      },
      {
        retries: this.o.retries ?? 5,
        minTimeout: 100,
        maxTimeout: 3000,
        // Not p-retry's own `signal`: that rejects at once, while the try under way still holds its buffer.
        shouldRetry: (e) => e instanceof TransportError && e.retryable && !signal?.aborted,
      },
    );
  }

  async put(key: string, data: Buffer | string, options: { ifAbsent?: boolean } = {}): Promise<void> {
    const Key = this.key(key);
    await this.retry(`put ${key}`, async () => {
      try {
        await this.s3.send(new PutObjectCommand({ Bucket: this.bucket, Key, Body: data, ContentLength: Buffer.byteLength(data), ...(options.ifAbsent ? { IfNoneMatch: '*' } : {}) }));
      } catch (e) {
        if (options.ifAbsent && (awsStatus(e) === 412 || awsCode(e) === 'PreconditionFailed' || awsCode(e) === 'ConditionalRequestConflict')) {
          throw new ConflictError(`object '${key}' already exists`);
        }
        throw e;
      }
    });
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const Key = this.key(key);
    return this.retry(`head ${key}`, async () => {
      try {
        const r = await this.s3.send(new HeadObjectCommand({ Bucket: this.bucket, Key }));
        return { key, sizeBytes: r.ContentLength ?? 0 };
      } catch (e) {
        if (isMissing(e)) return undefined;
        throw e;
      }
    });
  }

  async get(key: string): Promise<Buffer | undefined> {
    const Key = this.key(key);
    return this.retry(`get ${key}`, async () => {
      try {
        const r = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key }));
        return await readBody(r.Body as Readable, r.ContentLength);
      } catch (e) {
        if (isMissing(e)) return undefined;
        throw e;
      }
    });
  }

  /**
   * Reads a blob into `buf`, a buffer over shared memory (one of the process's chunk buffers, which
   * the hashing threads then check in place): a presigned GET on the fetching thread
   * (common/artifacts/fetch-pool.ts), so that a restore parses HTTP, hashes and writes on different
   * cores. Returns its size; one larger than `buf` is not read. Undefined when it does not exist.
   * `signal` stops the read and its retries (the restore it is part of has failed).
   */
  async readInto(key: string, buf: Buffer, signal?: AbortSignal): Promise<number | undefined> {
    const Key = this.key(key);
    return this.retry(`get ${key}`, async () => {
      if (signal?.aborted) throw new TransportError(`S3 get ${key}: stopped`, { retryable: false });
      // Signed for each try, at the clock the SDK has corrected from S3's answers (an agent's clock may be off).
      const signingDate = new Date(Date.now() + (this.s3.config.systemClockOffset ?? 0));
      const url = await getSignedUrl(this.s3, new GetObjectCommand({ Bucket: this.bucket, Key }), { expiresIn: PRESIGNED_SEC, signingDate });
      const a = await fetchInto(url, buf, signal);
      if (a.kind === 'failed') {
        const retryable = a.retryable ?? (a.code !== undefined && (retryableCode(a.code) || NET_RETRYABLE.has(a.code)));
        throw new TransportError(`S3 get ${key}: ${a.message}`, { retryable, ...(a.code === undefined ? {} : { awsCode: a.code }) });
      }
      if (a.kind === 'status') {
        const code = /<Code>([^<]{1,100})<\/Code>/.exec(a.body)?.[1] ?? `HTTP ${a.status}`;
        if (a.status === 404 || code === 'NoSuchKey') return undefined;
        // S3's <Message> says what went wrong ("Request has expired"); the parts that quote the request are separate elements.
        const said = s3Message(a.body);
        throw new TransportError(`S3 get ${key}: ${code} (HTTP ${a.status})${said ? `: ${said}` : ''}`, {
          retryable: a.status >= 500 || a.status === 429 || retryableCode(code),
          statusCode: a.status,
          awsCode: code,
        });
      }
      return a.sizeBytes;
    }, signal);
  }

  async putStream(key: string, body: Readable, options: { sizeBytes?: number } = {}): Promise<void> {
    // A body that ends within the first part is one PutObject with a known length (and retried whole);
    // anything longer goes through lib-storage's multipart upload, whose parts the SDK retries.
    const head: Buffer[] = [];
    let headBytes = 0;
    const iterator = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    let next = await iterator.next();
    while (!next.done && headBytes < SINGLE_PUT_MAX_BYTES) {
      const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value);
      head.push(chunk);
      headBytes += chunk.length;
      if (headBytes < SINGLE_PUT_MAX_BYTES) next = await iterator.next();
    }
    if (next.done) return this.put(key, Buffer.concat(head));
    const rest = Readable.from(
      (async function* () {
        yield* head;
        for (let r = await iterator.next(); !r.done; r = await iterator.next()) yield r.value;
      })(),
    );
    try {
      const upload = new Upload({
        client: this.s3,
        params: { Bucket: this.bucket, Key: this.key(key), Body: rest },
        partSize: partSizeFor(options.sizeBytes),
        queueSize: this.o.queueSize ?? 4,
        leavePartsOnError: false,
      });
      await upload.done();
    } catch (e) {
      body.destroy();
      rest.destroy();
      throw e instanceof TransportError ? e : wrapAws(e, `upload ${key}`);
    }
  }

  async getStream(key: string): Promise<Readable> {
    const Key = this.key(key);
    return this.retry(`get ${key}`, async () => {
      try {
        const r = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key }));
        return r.Body as Readable;
      } catch (e) {
        if (isMissing(e)) throw new NotFoundError(`object '${key}' does not exist`);
        throw e;
      }
    });
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    const full = this.prefix + prefix;
    const after = options.startAfter === undefined ? {} : { StartAfter: this.prefix + options.startAfter };
    await this.retry(`list ${prefix}`, async () => {
      out.length = 0;
      for await (const page of paginateListObjectsV2({ client: this.s3 }, { Bucket: this.bucket, Prefix: full, ...after })) {
        for (const o of page.Contents ?? []) {
          if (o.Key) out.push({ key: o.Key.slice(this.prefix.length), sizeBytes: o.Size ?? 0, ...(o.LastModified ? { modifiedAtMs: o.LastModified.getTime() } : {}) });
        }
      }
    });
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /**
   * S3 has no "set mtime": an object copied onto itself with its metadata replaced gets a new
   * LastModified, and the copy happens inside S3 (one request, no bytes sent; blobs are at most one
   * 8 MiB chunk or pack, far below CopyObject's 5 GB limit).
   */
  async touch(key: string): Promise<boolean> {
    const Key = this.key(key);
    return this.retry(`touch ${key}`, async () => {
      try {
        await this.s3.send(new CopyObjectCommand({ Bucket: this.bucket, Key, CopySource: `${this.bucket}/${encodeURIComponent(Key)}`, MetadataDirective: 'REPLACE' }));
        return true;
      } catch (e) {
        if (isMissing(e)) return false;
        throw e;
      }
    });
  }

  async delete(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000).map((k) => ({ Key: this.key(k) }));
      await this.retry('delete', () => this.s3.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch, Quiet: true } })));
    }
  }
}

