import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * `500`: an InternalError answer; `403`: an AccessDenied answer; `drop`: the connection closed before
 * any answer; `cut`: the real answer's headers and about half its body, then the connection closed;
 * `stall`: no answer at all, the connection left open (until the client gives up or the proxy stops).
 */
export type Fault = '500' | '403' | 'drop' | 'cut' | 'stall';

/** A request the proxy saw: S3's method and path, or SQS's action (its JSON protocol's X-Amz-Target, less `AmazonSQS.`). */
export interface SeenRequest {
  method: string;
  path: string;
  /** The query string, without its `?` ('' if none). */
  query: string;
  sqsAction?: string;
}

/**
 * A loopback proxy in front of fauxqs's S3 for tests. It adds what fauxqs 1.9 lacks and real S3
 * has, conditional PUT (`If-None-Match: *` answers 412 when the key exists, checked and written one
 * at a time per key), and it can inject faults: 5xx answers or dropped connections. It records every
 * request it forwards; pointed at as the SQS endpoint too, it records SQS's actions as well.
 */
export class S3Proxy {
  private server: Server | undefined;
  private readonly locks = new Map<string, Promise<void>>();
  private faults: Array<{ fault: Fault; when: (req: IncomingMessage) => boolean }> = [];
  /** Requests that got a fault, for assertions. */
  injected = 0;
  /** Added to the Date header of every answer forwarded: S3's clock as it differs from this machine's. */
  dateOffsetMs = 0;
  /** Every request received, in order; a test empties it to look at one command's calls. */
  requests: SeenRequest[] = [];

  constructor(private readonly upstream: string) {}

  async start(): Promise<string> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((resolve) => this.server?.close(resolve));
  }

  /** Forgets the faults not injected yet. */
  clearFaults(): void {
    this.faults = [];
  }

  /** Injects `fault` into the next `count` requests that match. */
  inject(fault: Fault, count: number, when: (req: IncomingMessage) => boolean = () => true): void {
    for (let i = 0; i < count; i++) this.faults.push({ fault, when });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = req.headers['x-amz-target'];
    this.requests.push({
      method: req.method ?? '?',
      path: (req.url ?? '/').split('?')[0] ?? '/',
      query: (req.url ?? '').split('?')[1] ?? '',
      ...(typeof target === 'string' && target.startsWith('AmazonSQS.') ? { sqsAction: target.slice('AmazonSQS.'.length) } : {}),
    });
    const i = this.faults.findIndex((f) => f.when(req));
    if (i >= 0) {
      const fault = this.faults.splice(i, 1)[0]?.fault;
      this.injected += 1;
      if (fault === 'cut') {
        await this.forward(req, res, true);
        return;
      }
      req.resume();
      if (fault === 'stall') return;
      if (fault === 'drop') {
        req.socket.destroy();
        return;
      }
      const [status, code] = fault === '403' ? [403, 'AccessDenied'] : [500, 'InternalError'];
      res.writeHead(status, { 'content-type': 'application/xml' });
      res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected</Message></Error>`);
      return;
    }
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (req.method === 'PUT' && req.headers['if-none-match'] === '*') {
      const prev = this.locks.get(path) ?? Promise.resolve();
      let release!: () => void;
      const mine = new Promise<void>((r) => (release = r));
      this.locks.set(path, prev.then(() => mine));
      await prev;
      try {
        if ((await this.status('HEAD', path)) === 200) {
          req.resume();
          res.writeHead(412, { 'content-type': 'application/xml' });
          res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>');
          return;
        }
        await this.forward(req, res);
      } finally {
        release();
      }
      return;
    }
    await this.forward(req, res);
  }

  private status(method: string, path: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const r = request(`${this.upstream}${path}`, { method }, (up) => {
        up.resume();
        resolve(up.statusCode ?? 0);
      });
      r.on('error', reject);
      r.end();
    });
  }

  /** Forwards a request upstream and its answer back; `cut`: only about half of the answer's body, then the connection closes. */
  private forward(req: IncomingMessage, res: ServerResponse, cut = false): Promise<void> {
    return new Promise((resolve) => {
      const up = request(`${this.upstream}${req.url ?? '/'}`, { method: req.method, headers: req.headers }, (upRes) => {
        const date = upRes.headers.date;
        const headers = this.dateOffsetMs !== 0 && date ? { ...upRes.headers, date: new Date(Date.parse(date) + this.dateOffsetMs).toUTCString() } : upRes.headers;
        res.writeHead(upRes.statusCode ?? 502, headers);
        if (cut) {
          let left = Math.floor(Number(upRes.headers['content-length'] ?? 0) / 2);
          const close = (): void => {
            upRes.destroy();
            // Flushed first, so that the reader has the half before the connection closes.
            res.socket?.end(() => res.socket?.destroy());
            resolve();
          };
          if (left <= 0) return close();
          upRes.on('data', (c: Buffer) => {
            if (left <= 0) return;
            res.write(c.subarray(0, left));
            left -= c.length;
            if (left <= 0) close();
          });
          return;
        }
        upRes.pipe(res);
        upRes.on('end', resolve);
      });
      up.on('error', () => {
        res.destroy();
        resolve();
      });
      req.pipe(up);
    });
  }
}
