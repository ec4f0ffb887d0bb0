import { WorkerPool, sharedBuffer } from './worker-pool.js';

/** A socket that brings no bytes for this long fails the GET (retryable). */
const IDLE_MS = 60_000;

/**
 * One fetching thread. It only parses HTTP and copies bodies into chunk buffers; the hashing threads
 * check them in place and the caller writes them, so the work of a download spreads over the cores.
 * Each fetching thread's socket reads are garbage once copied, and cost memory until its next
 * collection: on this project's 2-core bench machine a second one peaked about 90 MB higher.
 */
const FETCH_THREADS = 1;

/**
 * The fetching thread's code (see WorkerPool for why it is a string). It GETs a URL over keep-alive
 * sockets and copies the body into the chunk buffer it was given (shared memory, sent once per
 * thread). Error answers keep the start of their body (S3 puts its error code there). Failures are
 * answered, never thrown, and carry only an error code, never the URL (a presigned URL is a credential).
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const http = require('node:http');
const https = require('node:https');
const agents = { 'http:': new http.Agent({ keepAlive: true }), 'https:': new https.Agent({ keepAlive: true }) };
const shared = new Map();
const running = new Map();
function fetch(m, answer, isAnswered) {
  if (m.buffer) shared.set(m.shared, m.buffer);
  const body = Buffer.from(shared.get(m.shared), m.offset, m.maxBytes);
  const url = new URL(m.url);
  const req = (url.protocol === 'https:' ? https : http).get(url, { agent: agents[url.protocol], timeout: ${IDLE_MS} }, (res) => {
    const status = res.statusCode;
    if (status !== 200) {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { if (text.length < 2048) text += c; });
      res.on('end', () => answer({ status, body: text.slice(0, 2048) }));
      res.on('close', () => answer({ status, body: text.slice(0, 2048) }));
      return;
    }
    const length = res.headers['content-length'] === undefined ? undefined : Number(res.headers['content-length']);
    if (length !== undefined && length > m.maxBytes) { res.destroy(); return answer({ status, size: length }); }
    let size = 0;
    res.on('data', (c) => {
      // Nothing is copied once answered: the caller may hash the buffer, or hand it to another read.
      if (isAnswered()) return;
      // Only without a Content-Length: the parser never hands on more than it says.
      if (size + c.length > m.maxBytes) { res.destroy(); return answer({ status, size: size + c.length }); }
      c.copy(body, size);
      size += c.length;
    });
    const dropped = () => answer({ error: 'the connection dropped after ' + size + ' bytes', code: 'ECONNRESET', retryable: true });
    res.on('error', dropped);
    res.on('close', () => { if (!res.complete) dropped(); });
    res.on('end', () => {
      if (!res.complete) return dropped();
      if (length !== undefined && size !== length) return answer({ error: 'the body ended after ' + size + ' of ' + length + ' bytes', code: 'ECONNRESET', retryable: true });
      answer({ status, size });
    });
  });
  req.on('timeout', () => req.destroy(Object.assign(new Error('no bytes for ${IDLE_MS / 1000} s'), { code: 'ETIMEDOUT' })));
  req.on('error', (e) => answer({ error: e.code || e.name, code: e.code }));
  running.set(m.id, req);
}
parentPort.on('message', (m) => {
  if (m.abort) {
    const req = running.get(m.id);
    if (req) req.destroy(Object.assign(new Error('aborted'), { code: 'ABORT_ERR' }));
    return;
  }
  let answered = false;
  const answer = (a) => {
    if (answered) return;
    answered = true;
    const req = running.get(m.id);
    running.delete(m.id);
    if (req && !req.destroyed && a.error !== undefined) req.destroy();
    parentPort.postMessage({ id: m.id, ...a });
  };
  try {
    fetch(m, answer, () => answered);
  } catch (e) {
    answer({ error: (e && e.code) || 'the fetch could not start', code: e && e.code, retryable: false });
  }
});
`;

/** A fetch's outcome: an HTTP answer, or a failure to get one. */
export type FetchAnswer =
  /** A 200 whose body is in the buffer; or, larger than the buffer, only its size (nothing read). */
  | { kind: 'body'; sizeBytes: number }
  /** Any other status, with the start of its body. */
  | { kind: 'status'; status: number; body: string }
  /** No whole answer: a dropped, refused or stalled connection, a short body. `retryable` is undefined when only the code can tell. */
  | { kind: 'failed'; message: string; code?: string; retryable?: boolean };

interface Raw {
  status?: number;
  size?: number;
  body?: string;
  error?: string;
  code?: string;
  retryable?: boolean;
}

let pool: WorkerPool<Raw> | undefined;

/**
 * GETs a URL that needs no headers (a presigned one) on the fetching thread, into `into`: a buffer over
 * shared memory (a chunk slot), which must not be touched until this settles. A body larger than
 * `into` is not read; its size says so. When `signal` aborts, the GET is stopped and this settles
 * (failed, code ABORT_ERR) once the thread has let go of `into`. Keeps HTTP parsing and the garbage
 * of a large download off the caller's thread.
 */
export async function fetchInto(url: string, into: Buffer, signal?: AbortSignal): Promise<FetchAnswer> {
  const buffer = into.buffer;
  if (!(buffer instanceof SharedArrayBuffer)) throw new Error('fetchInto: the buffer must be over shared memory (a chunk slot)');
  pool ??= new WorkerPool<Raw>(WORKER_SOURCE, FETCH_THREADS);
  const r = await pool.run((thread) => ({ message: { url, maxBytes: into.length, offset: into.byteOffset, ...sharedBuffer(thread, buffer) } }), signal);
  if (r.error !== undefined) return { kind: 'failed', message: r.error, ...(r.code === undefined ? {} : { code: r.code }), ...(r.retryable === undefined ? {} : { retryable: r.retryable }) };
  if (r.status !== 200) return { kind: 'status', status: r.status ?? 0, body: r.body ?? '' };
  return { kind: 'body', sizeBytes: r.size ?? 0 };
}
