import { randomBytes, timingSafeEqual } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest, createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { createProxyServer } from 'http-proxy-3';
import type { ServerProvider } from '../common/spec/schema.js';
import { shellQuote } from '../common/spec/job-spec.js';

/**
 * A dev environment's server (code, lab, notebook): the command line the job runs, where it listens,
 * the link's path and token parameter, and the HTTP probe that says it is ready.
 *
 * Jupyter checks the token itself: it reads JUPYTER_TOKEN from its environment (never the command
 * line, which other users of the machine can read), and the link carries `?token=`. code-server has
 * only a password form, so it runs with `--auth none` on a unix socket inside the job's folder
 * (0700), which nothing but the agent and the job can reach, and the agent serves the published
 * port through an authenticating proxy (`CodeAuthProxy`): the link's `?dstack-token=` sets a cookie.
 */
export interface ServerPlan {
  provider: ServerProvider;
  /** Appended to the job's script: `exec` of the server, so a stop reaches it directly. */
  command: string;
  /** Set in the job's environment. */
  env: Record<string, string>;
  /** The published port on 127.0.0.1: Jupyter's own, or the proxy's in front of code-server. */
  port: number;
  path: string;
  tokenParam: string;
  /** code-server's unix socket, behind the proxy. */
  socket?: string;
  /** What the readiness probe asks: 200 means ready. */
  probe: { socketPath?: string; port?: number; path: string };
}

export interface ServerPlanInput {
  provider: ServerProvider;
  /** The absolute path of the server program (findDevServer). */
  binary: string;
  /** The folder the server opens: the working dir of the repo's checkout. */
  cwd: string;
  port: number;
  token: string;
  /** A folder of the job's own (0700), for code-server's socket and its state. */
  jobDir: string;
}

export const CODE_TOKEN_PARAM = 'dstack-token';

export function planServer(i: ServerPlanInput): ServerPlan {
  const bin = shellQuote(i.binary);
  if (i.provider === 'code') {
    const socket = `${i.jobDir}/code.sock`;
    const args = [
      '--auth none',
      `--socket ${shellQuote(socket)}`,
      '--socket-mode 600',
      '--disable-telemetry',
      '--disable-update-check',
      '--disable-workspace-trust',
      '--disable-getting-started-override',
      `--user-data-dir ${shellQuote(`${i.jobDir}/code-server/data`)}`,
      `--extensions-dir ${shellQuote(`${i.jobDir}/code-server/extensions`)}`,
      shellQuote(i.cwd),
    ];
    return {
      provider: 'code',
      command: `exec ${bin} ${args.join(' ')}`,
      env: {},
      port: i.port,
      path: '/',
      tokenParam: CODE_TOKEN_PARAM,
      socket,
      probe: { socketPath: socket, path: '/healthz' },
    };
  }
  const app = i.provider === 'lab' ? 'ServerApp' : 'NotebookApp';
  const args = [
    '--no-browser',
    '--ip=127.0.0.1',
    `--port=${i.port}`,
    '--port-retries=0',
    `--${app}.${i.provider === 'lab' ? 'root_dir' : 'notebook_dir'}=${shellQuote(i.cwd)}`,
    // Jupyter refuses to start as root without it; as another user it changes nothing.
    '--allow-root',
  ];
  return {
    provider: i.provider,
    command: `exec ${bin} ${args.join(' ')}`,
    env: { JUPYTER_TOKEN: i.token },
    port: i.port,
    path: i.provider === 'lab' ? '/lab' : '/tree',
    tokenParam: 'token',
    probe: { port: i.port, path: '/api' },
  };
}

/** One HTTP GET of the probe: its status, or 0 when nothing answers. */
export function probeOnce(probe: ServerPlan['probe'], timeoutMs = 2000): Promise<number> {
  return new Promise((resolve) => {
    const req = httpRequest(
      { ...(probe.socketPath ? { socketPath: probe.socketPath } : { host: '127.0.0.1', port: probe.port }), path: probe.path, method: 'GET', timeout: timeoutMs, agent: false },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

/**
 * The authenticating proxy in front of code-server: 127.0.0.1:port → the unix socket. A request whose
 * query carries the right `dstack-token` gets a session cookie (HttpOnly, SameSite=Strict) and a
 * redirect to the same path without the token; requests and WebSocket upgrades with the cookie pass;
 * all else gets 401.
 *
 * Browsers keep one cookie jar per host, whatever the port, so the cookie is named after this port
 * (two dev environments open at once don't log each other out) and holds a random session id, never
 * the token (other servers on 127.0.0.1 see the cookie). A WebSocket from a page of another origin
 * (another port on the same host is the same site) is refused.
 */
export class CodeAuthProxy {
  private readonly server: Server;
  private readonly proxy;
  private readonly sessions = new Set<string>();
  private readonly upstream: HttpAgent;
  private cookie = 'dstack-session';
  /** Upgraded (WebSocket) connections: the HTTP server no longer tracks them, and close must end them. */
  private readonly upgraded = new Set<Duplex>();

  constructor(
    socketPath: string,
    private readonly token: string,
  ) {
    // Its own agent, ended with the proxy: Node's global agent would keep connections to a code-server that is gone.
    this.upstream = new HttpAgent({ keepAlive: true });
    this.proxy = createProxyServer({ target: { socketPath, host: 'localhost', port: 0 }, ws: true, xfwd: false, agent: this.upstream });
    this.proxy.on('error', (_e: Error, _req: IncomingMessage, res: ServerResponse | Duplex) => {
      if ('writeHead' in res && !res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end('dstack: code-server is not answering (yet)\n');
      } else res.destroy();
    });
    this.server = createServer((req, res) => this.onRequest(req, res));
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (!this.hasCookie(req) || !sameOrigin(req)) {
        socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      this.upgraded.add(socket);
      socket.once('close', () => this.upgraded.delete(socket));
      this.proxy.ws(req, socket, head);
    });
  }

  listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', reject);
        this.cookie = `dstack-session-${port}`;
        resolve();
      });
    });
  }

  /** Stops listening and ends every connection, WebSockets included (a browser tab left open must not hold the job's end). */
  async close(): Promise<void> {
    for (const socket of this.upgraded) socket.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.proxy.close();
    this.upstream.destroy();
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const given = url.searchParams.get(CODE_TOKEN_PARAM);
    if (given !== null) {
      if (!this.matches(given)) return unauthorized(res);
      url.searchParams.delete(CODE_TOKEN_PARAM);
      const session = randomBytes(24).toString('base64url');
      this.sessions.add(session);
      // A path, never a scheme-relative `//host`: leading slashes (and backslashes, which browsers read as slashes) fold into one.
      const path = `/${url.pathname.replace(/^[/\\]+/, '')}`;
      res.writeHead(302, {
        'set-cookie': `${this.cookie}=${session}; HttpOnly; SameSite=Strict; Path=/`,
        location: `${path}${url.search}`,
        'cache-control': 'no-store',
      });
      res.end();
      return;
    }
    if (!this.hasCookie(req)) return unauthorized(res);
    this.proxy.web(req, res);
  }

  private hasCookie(req: IncomingMessage): boolean {
    for (const part of (req.headers.cookie ?? '').split(';')) {
      const eq = part.indexOf('=');
      if (eq > 0 && part.slice(0, eq).trim() === this.cookie && this.sessions.has(part.slice(eq + 1).trim())) return true;
    }
    return false;
  }

  private matches(given: string): boolean {
    const a = Buffer.from(given);
    const b = Buffer.from(this.token);
    return a.length === b.length && timingSafeEqual(a, b);
  }
}

/** A WebSocket's page is of this server's origin: its Origin (when the browser sends one) names the Host it connects to. */
function sameOrigin(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

function unauthorized(res: ServerResponse): void {
  res.writeHead(401, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
  res.end('dstack: this dev environment needs its token: open the link that `dstack run` or `dstack attach` printed\n');
}
