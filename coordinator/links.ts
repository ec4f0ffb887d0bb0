import { request } from 'node:http';
import type { Store } from '../common/ports.js';
import { AttemptRecordSchema } from '../common/records/runs.js';
import { readJson, runKeys, type AttemptRecord, type ServiceInfo } from '../common/runs.js';
import type { SecretStore } from '../common/secrets.js';
import { SERVER_TOKEN } from '../common/dev-tools.js';
import { isOthers } from '../common/owner.js';


/** A link the CLI prints: a dev environment's (with its token) or one of the job's ports. */
export interface Link {
  kind: 'server' | 'port';
  /** The port on the machine that runs the job. */
  port: number;
  url: string;
}

/**
 * Where a port of the job is reached from here: `127.0.0.1:PORT` for a job on this machine, or
 * the local end of an SSH forward (`localhost:LOCAL`) for one on EC2. Undefined: not reachable (yet).
 */
export type Reach = (remotePort: number) => Promise<{ host: string; port: number } | undefined>;

export const reachLocal: Reach = (port) => Promise.resolve({ host: '127.0.0.1', port });

/** The links of what the attempt serves now: the server once ready (token included), each port once open. */
export async function linksOf(service: ServiceInfo, token: string | undefined, reach: Reach): Promise<Link[]> {
  const links: Link[] = [];
  const s = service.server;
  if (s?.ready && token !== undefined) {
    const at = await reach(s.port);
    if (at) links.push({ kind: 'server', port: s.port, url: `http://${at.host}:${at.port}${s.path}?${s.tokenParam}=${encodeURIComponent(token)}` });
  }
  for (const p of service.ports) {
    if (!p.open) continue;
    const at = await reach(p.port);
    if (at) links.push({ kind: 'port', port: p.port, url: `http://${at.host}:${at.port}` });
  }
  return links;
}

/** The running attempt's record (the last one, while it runs), or undefined. */
export async function runningAttempt(store: Store, repoId: string, runName: string): Promise<AttemptRecord | undefined> {
  const keys = (await store.list(runKeys.attempts(repoId, runName))).map((o) => o.key).sort();
  const last = keys[keys.length - 1];
  if (!last) return undefined;
  const a = await readJson(store, last, AttemptRecordSchema);
  return a?.state === 'running' ? a : undefined;
}

export async function serverToken(secrets: SecretStore | undefined, repoId: string, runName: string): Promise<string | undefined> {
  return secrets ? secrets.get({ repoId, runName }, SERVER_TOKEN) : undefined;
}

export interface WatchOptions {
  store: Store;
  secrets: SecretStore | undefined;
  repoId: string;
  runName: string;
  reach: Reach;
  /** Each link once, as soon as it answers: a server's link after an HTTP 200 through it, following redirects. */
  onLink: (link: Link) => void;
  /** Ends the watch (the run ended, Ctrl-C). */
  stopped: Promise<unknown>;
  pollMs?: number;
}

/** Prints (through onLink) every link of the run as it comes up, until `stopped`. */
export async function watchLinks(o: WatchOptions): Promise<void> {
  const printed = new Set<string>();
  let done = false;
  void o.stopped.then(() => (done = true));
  let token: string | undefined;
  let tokenRead = false;
  while (!done) {
    const attempt = await runningAttempt(o.store, o.repoId, o.runName).catch(() => undefined);
    let pending = true;
    if (attempt?.service) {
      // Read once: the token of a run does not change, and the secret store is not polled.
      if (attempt.service.server && !tokenRead) {
        token = await serverToken(o.secrets, o.repoId, o.runName).catch(() => undefined);
        tokenRead = true;
      }
      for (const link of await linksOf(attempt.service, token, o.reach)) {
        const key = `${attempt.attempt}:${link.kind}:${link.port}`;
        if (printed.has(key) || done) continue;
        if (link.kind === 'server' && (await httpGetFollowing(link.url)) !== 200) continue;
        printed.add(key);
        o.onLink(link);
      }
      const s = attempt.service;
      const all = [...(s.server && token !== undefined ? [`server:${s.server.port}`] : []), ...s.ports.map((p) => `port:${p.port}`)];
      pending = all.some((k) => !printed.has(`${attempt.attempt}:${k}`));
    }
    // Quick while a link is still to come; then slow (a later attempt, after a spot interruption, brings new links).
    const pollMs = pending ? (o.pollMs ?? 200) : 3000;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([new Promise((r) => (timer = setTimeout(r, pollMs))), o.stopped]);
    // Stopped first: the wait must not hold the process (the CLI exits when its event loop is empty).
    clearTimeout(timer);
  }
}

/** GET `url`, following redirects (and keeping cookies they set) up to 10 times: the last status, or 0. */
export async function httpGetFollowing(url: string, timeoutMs = 5000): Promise<number> {
  let current = new URL(url);
  const cookies = new Map<string, string>();
  for (let hop = 0; hop < 10; hop++) {
    const res = await new Promise<{ status: number; location?: string; setCookie: string[] } | undefined>((resolve) => {
      const cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
      const req = request(current, { method: 'GET', timeout: timeoutMs, agent: false, headers: cookie ? { cookie } : {} }, (r) => {
        r.resume();
        resolve({ status: r.statusCode ?? 0, ...(r.headers.location ? { location: r.headers.location } : {}), setCookie: r.headers['set-cookie'] ?? [] });
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(undefined));
      req.end();
    });
    if (!res) return 0;
    for (const c of res.setCookie) {
      const [pair] = c.split(';');
      const eq = pair?.indexOf('=') ?? -1;
      if (pair && eq > 0) cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
    if (res.status >= 300 && res.status < 400 && res.location) {
      const next = new URL(res.location, current);
      // Only within the server the link names: the cookies (and the token) never go elsewhere.
      if (next.origin !== current.origin) return res.status;
      current = next;
      continue;
    }
    return res.status;
  }
  return 0;
}

/**
 * Whether this user may see the run's token: their own run, or one recorded before owners existed.
 * Another owner's dev environment is theirs: its link (a shell as the job's user) is never printed here.
 */
export async function mayOpen(owner: () => Promise<string>, runOwner: string | undefined): Promise<boolean> {
  if (runOwner === undefined) return true;
  return !isOthers(runOwner, await owner());
}
