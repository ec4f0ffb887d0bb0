import { WorkerPool } from './worker-pool.js';

/** A socket that brings no bytes for this long fails the GET (retryable). */
const IDLE_MS = 60_000;

/**
 * The fetching thread's code (see WorkerPool for why it is a string). It GETs a URL over keep-alive
 * sockets, hashes the body as it arrives, and, only when the hash and size are the ones expected,
 * writes it at its offset in the file (one writev, gone on with where a write stops short). Error
 * answers keep the start of their body (S3 puts its error code there); failures are answered, never
 * thrown, and never carry the URL (a presigned URL is a credential for its object).
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const http = require('node:http');
const https = require('node:https');
const { createHash } = require('node:crypto');
const { writev } = require('node:fs');
const agents = { 'http:': new http.Agent({ keepAlive: true }), 'https:': new https.Agent({ keepAlive: true }) };
function writeAll(fd, parts, position, done) {
  if (parts.length === 0) return done(null);
  writev(fd, parts.slice(0, 512), position, (err, n) => {
    if (err) return done(err);
    if (n === 0) return done(new Error('a write wrote nothing'));
    let k = 0, left = n;
    while (k < parts.length && left >= parts[k].length) left -= parts[k++].length;
    const rest = parts.slice(k);
    if (left > 0) rest[0] = rest[0].subarray(left);
    writeAll(fd, rest, position + n, done);
  });
}
parentPort.on('message', (m) => {
  let answered = false;
  const answer = (a) => { if (!answered) { answered = true; parentPort.postMessage({ id: m.id, ...a }); } };
  const url = new URL(m.url);
  const req = (url.protocol === 'https:' ? https : http).get(url, { agent: agents[url.protocol], timeout: ${IDLE_MS} }, (res) => {
    const status = res.statusCode;
    const dropped = (size) => answer({ error: 'the connection dropped after ' + size + ' bytes', retryable: true });
    if (status !== 200) {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { if (body.length < 2048) body += c; });
      res.on('end', () => answer({ status, body: body.slice(0, 2048) }));
      res.on('error', () => answer({ status, body }));
      return;
    }
    const length = res.headers['content-length'] === undefined ? undefined : Number(res.headers['content-length']);
    if (length !== undefined && length > m.maxBytes) { res.destroy(); return answer({ status, size: length }); }
    const hash = createHash('sha256');
    const parts = [];
    let size = 0;
    res.on('data', (c) => {
      size += c.length;
      if (size > m.maxBytes) { res.destroy(); return length === undefined ? answer({ status, size }) : answer({ error: 'the body is longer than its Content-Length (' + length + ' bytes)', retryable: true }); }
      hash.update(c);
      parts.push(c);
    });
    res.on('error', () => dropped(size));
    res.on('close', () => { if (!res.complete) dropped(size); });
    res.on('end', () => {
      if (!res.complete) return dropped(size);
      if (length !== undefined && size !== length) return answer({ error: 'the body ended after ' + size + ' of ' + length + ' bytes', retryable: true });
      const sha = hash.digest('hex');
      if (sha !== m.sha || (m.exactBytes !== undefined && size !== m.exactBytes)) return answer({ status, size, sha, written: false });
      writeAll(m.fd, parts, m.position, (err) => err ? answer({ error: 'writing the file: ' + err.message, writeFailed: true }) : answer({ status, size, sha, written: true }));
    });
  });
  req.on('timeout', () => req.destroy(new Error('no bytes for ${IDLE_MS / 1000} s')));
  req.on('error', (e) => answer({ error: e.code ? e.code + ': ' + e.message : e.message, retryable: true }));
});
`;

/** What to fetch, what its bytes must hash to, and where they go. */
export interface FetchTask {
  /** An http(s) URL that needs no headers (a presigned one). */
  url: string;
  /** The sha256 the body must have for it to be written. */
  sha256: string;
  /** If set, the size the body must have for it to be written. */
  exactBytes?: number;
  /** A larger body is not read: the answer gives its size. */
  maxBytes: number;
  /** An open file (its descriptor) and the offset where the body goes. */
  fd: number;
  position: number;
}

/** A fetch's outcome: an HTTP answer, or a failure to get one. */
export type FetchAnswer =
  /** A 200 read whole (or its size only, over maxBytes): written only if its hash and size were the ones asked for. */
  | { kind: 'body'; sizeBytes: number; sha256?: string; written: boolean }
  /** Any other status, with the start of its body. */
  | { kind: 'status'; status: number; body: string }
  /** No whole answer (a dropped or stalled connection, a short body), or the file write failed. */
  | { kind: 'failed'; message: string; retryable: boolean };

interface Raw {
  status?: number;
  size?: number;
  sha?: string;
  written?: boolean;
  body?: string;
  error?: string;
  retryable?: boolean;
}

let pool: WorkerPool<Raw> | undefined;

/**
 * Fetches a URL on a worker thread, hashes its body there as it arrives and, when it is as expected,
 * writes it into the file: so that HTTP parsing, hashing and garbage collection of a large download
 * run on all cores and not on the caller's one thread. The file must stay open until this settles.
 */
export async function fetchInto(task: FetchTask): Promise<FetchAnswer> {
  pool ??= new WorkerPool<Raw>(WORKER_SOURCE);
  const { url, sha256, exactBytes, maxBytes, fd, position } = task;
  const r = await pool.run(() => ({ message: { url, sha: sha256, exactBytes, maxBytes, fd, position } }));
  if (r.error !== undefined) return { kind: 'failed', message: r.error, retryable: r.retryable === true };
  if (r.status !== 200) return { kind: 'status', status: r.status ?? 0, body: r.body ?? '' };
  return { kind: 'body', sizeBytes: r.size ?? 0, ...(r.sha === undefined ? {} : { sha256: r.sha }), written: r.written === true };
}
