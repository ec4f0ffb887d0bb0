import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { UsageError, errnoCode, toError } from '../../common/errors.js';
import type { Store } from '../../common/ports.js';
import type { Context } from '../context.js';
import { checkRequest, loginCookie, newPrefix, newToken } from './auth.js';
import { restartAction, stopAction, tagAction } from './api-actions.js';
import { downloadApi, treeApi } from './api-artifacts.js';
import { logsApi } from './api-logs.js';
import { runApi } from './api-run.js';
import { runsApi } from './api-runs.js';
import { EventHub } from './events.js';
import { HANDLED, HttpError, checkRunName, readJsonBody, sendJson, statusOf, type Route, type RouteRequest } from './http.js';
import type { RunsSource } from './runs-source.js';
import { serveStatic } from './static.js';

/** What the dashboard's server reads through: the (budgeted) Store, the summaries and the CLI's context for actions. */
export interface UiServerDeps {
  ctx: Context;
  /** The Store the pages read through (coordinator/ui/store-budget.ts wraps it: at most one listing a second). */
  store: Store;
  repoId: string;
  runs: RunsSource;
  /** 0: a free port. */
  port: number;
  /** Fixed in tests; otherwise a fresh random one. */
  token?: string;
  /** The path the app lives under (`/s/<P>/`); fixed in tests, otherwise a fresh random one. */
  prefix?: string;
  /** Routes added by other modules (machines, cost, services), tried after the core ones. */
  extraRoutes?: Route[];
  /** Where the server tells about errors it could not answer (a broken stream). */
  log: (line: string) => void;
}

/** A running dashboard: the URL to open (token included) and how to stop it. */
export interface UiServer {
  /** `http://127.0.0.1:PORT/?token=T`: it logs in and redirects to the prefix. */
  url: string;
  port: number;
  token: string;
  /** `/s/<P>/`: every page, asset and API lives below it. */
  prefix: string;
  close(): Promise<void>;
}

/**
 * Starts the dashboard's HTTP server on 127.0.0.1 only. Every request passes the gate (auth.ts);
 * then the route table answers, or the static bundle. It holds no state of its own beyond caches
 * of what never changes (tag records).
 */
export async function startUiServer(deps: UiServerDeps): Promise<UiServer> {
  const token = deps.token ?? newToken();
  const prefix = deps.prefix ?? newPrefix();
  // Once closing, a request cut short by the closed budget is no news for the user's terminal.
  let closing = false;
  const { store, repoId } = deps;
  const seen = new Map<string, string[]>();
  const hub = new EventHub(deps.runs, (n) => deps.runs.setWatchers(n));
  const run = (r: RouteRequest): string => checkRunName(r.params[0]);
  const artifact = (r: RouteRequest): number => {
    const n = Number(r.params[1]);
    if (!Number.isInteger(n) || n < 0) throw new HttpError(400, 'not an artifact index');
    return n;
  };
  // After an action the summaries are listed again at once: the page shows its effect without waiting.
  const acted = <T>(result: T): T => {
    deps.runs.refreshSoon();
    return result;
  };
  const routes: Route[] = [
    { method: 'GET', path: /^\/api\/runs$/, handle: (r) => runsApi(deps.runs, r.url.searchParams) },
    { method: 'GET', path: /^\/api\/runs\/([^/]+)$/, handle: (r) => runApi({ store, repoId, ctx: deps.ctx, runs: deps.runs, seen }, run(r)) },
    { method: 'GET', path: /^\/api\/runs\/([^/]+)\/logs$/, handle: (r) => logsApi(store, repoId, run(r), r.url.searchParams.get('after')) },
    { method: 'GET', path: /^\/api\/runs\/([^/]+)\/artifacts\/(\d+)\/tree$/, handle: (r) => treeApi(store, repoId, run(r), artifact(r)) },
    {
      method: 'GET',
      path: /^\/api\/runs\/([^/]+)\/artifacts\/(\d+)\/download$/,
      handle: async (r) => {
        await downloadApi(store, repoId, run(r), artifact(r), r.url.searchParams, r.res);
        return HANDLED;
      },
    },
    // Actions write through the CLI's own Store (not the budgeted one) and follow the CLI's owner rules.
    { method: 'POST', path: /^\/api\/runs\/([^/]+)\/stop$/, handle: async (r) => acted(await stopAction(deps.ctx, run(r), await r.body())) },
    { method: 'POST', path: /^\/api\/runs\/([^/]+)\/restart$/, handle: async (r) => acted(await restartAction(deps.ctx, run(r))) },
    { method: 'POST', path: /^\/api\/runs\/([^/]+)\/tag$/, handle: async (r) => acted(await tagAction(deps.ctx, run(r), await r.body())) },
    {
      method: 'GET',
      path: /^\/api\/events$/,
      handle: async (r) => {
        await hub.add(r.req, r.res);
        return HANDLED;
      },
    },
    ...(deps.extraRoutes ?? []),
  ];

  const server = createServer((req, res) => void handle(req, res));
  let port = 0;
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    // The page's URL holds the secret prefix: no request it makes may tell another site.
    res.setHeader('referrer-policy', 'no-referrer');
    const gate = checkRequest(req, url, { token, port, prefix });
    if (gate.kind === 'deny') {
      res.writeHead(gate.status, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`${gate.message}\n`);
      return;
    }
    if (gate.kind === 'login') {
      res.writeHead(302, { 'set-cookie': loginCookie(token, prefix), location: prefix, 'cache-control': 'no-store' });
      res.end();
      return;
    }
    const path = gate.path;
    try {
      if (!path.startsWith('/api/')) return await serveStatic(path, res);
      for (const route of routes) {
        const m = route.path.exec(path);
        if (!m) continue;
        if (route.method !== req.method) throw new HttpError(405, `${req.method ?? ''} is not allowed here`);
        const params = m.slice(1).map((p) => {
          try {
            return decodeURIComponent(p);
          } catch {
            throw new HttpError(400, 'a malformed path');
          }
        });
        const value = await route.handle({ req, res, url, params, body: () => readJsonBody(req) });
        if (value !== HANDLED) sendJson(res, 200, value);
        return;
      }
      throw new HttpError(404, 'no such API');
    } catch (e) {
      const err = toError(e);
      const status = statusOf(err);
      if (res.headersSent) {
        // A download or stream that broke halfway: end it short, so that the browser sees a failure.
        if (!closing) deps.log(`dstack ui: ${req.method ?? ''} ${path}: ${err.message}`);
        res.destroy();
        return;
      }
      if (status === 500 && !closing) deps.log(`dstack ui: ${req.method ?? ''} ${path}: ${err.message}`);
      sendJson(res, status, { error: err.message.split('\n')[0] ?? 'error' });
    }
  };
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) =>
      reject(errnoCode(e) === 'EADDRINUSE' ? new UsageError(`--port ${deps.port}: 127.0.0.1:${deps.port} is in use; give another port, or --port 0 for a free one`) : e),
    );
    server.listen(deps.port, '127.0.0.1', () => resolve());
  });
  port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/?token=${token}`,
    port,
    token,
    prefix,
    close: async () => {
      closing = true;
      hub.close();
      deps.runs.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
