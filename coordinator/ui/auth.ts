import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** The cookie that carries the token once the URL has been opened. */
export const COOKIE = 'dstack_ui';

/** A fresh token: 32 random bytes, base64url (43 characters). */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * A fresh path prefix, `/s/<16 random bytes base64url>/`, independent of the token. The app and
 * its cookie live under it, so that the browser sends the cookie to this server only: every port
 * of 127.0.0.1 is the same site for cookies, and a job's own web server (a link on the Services
 * page) must not receive the dashboard's token; two dashboards get two paths and two cookies.
 */
export function newPrefix(): string {
  return `/s/${randomBytes(16).toString('base64url')}/`;
}

/** What the gate decided about one request. */
export type Gate =
  /** `path`: the request's path below the prefix, with its leading `/` (`/api/runs`). */
  | { kind: 'pass'; path: string }
  /** `GET /?token=T`: the token becomes a cookie and the browser goes to the prefix, so the token leaves the address bar. */
  | { kind: 'login' }
  | { kind: 'deny'; status: 401 | 403; message: string };

/** What the gate checks a request against: the token, the port the server listens on and its path prefix. */
export interface GateOptions {
  token: string;
  port: number;
  /** `/s/<P>/` (newPrefix). */
  prefix: string;
}

const UNAUTHORIZED = 'unauthorized: open the URL that `dstack ui` printed (it holds the token)';

/**
 * Decides whether a request may go on. The Host header must name this server on the loopback (a
 * page on another site that rebinds its DNS name to 127.0.0.1 sends its own name); a POST must
 * come from this origin or from no page at all (curl). `GET /?token=T` logs in; anything else must
 * be under the prefix and carry the token, in the cookie or as `?token=`. Outside the prefix even
 * the right cookie gets 401: only the login lives there. Tokens are compared in constant time.
 */
export function checkRequest(req: IncomingMessage, url: URL, o: GateOptions): Gate {
  const host = req.headers.host ?? '';
  if (host !== `127.0.0.1:${o.port}` && host !== `localhost:${o.port}`) return { kind: 'deny', status: 403, message: 'forbidden: unknown Host' };
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== `http://${host}`) return { kind: 'deny', status: 403, message: 'forbidden: cross-origin request' };
  }
  const query = url.searchParams.get('token');
  const queryOk = query !== null && sameToken(query, o.token);
  if (url.pathname === '/' && req.method === 'GET' && queryOk) return { kind: 'login' };
  if (!url.pathname.startsWith(o.prefix)) return { kind: 'deny', status: 401, message: UNAUTHORIZED };
  const path = url.pathname.slice(o.prefix.length - 1);
  if (queryOk) return { kind: 'pass', path };
  // Every dstack_ui cookie the browser sent: a stale one of an older dashboard may come first.
  if (cookieValues(req.headers.cookie, COOKIE).some((c) => sameToken(c, o.token))) return { kind: 'pass', path };
  return { kind: 'deny', status: 401, message: UNAUTHORIZED };
}

/** The Set-Cookie header of a login: not readable by scripts, not sent by other sites, sent only below the prefix. */
export function loginCookie(token: string, prefix: string): string {
  return `${COOKIE}=${token}; HttpOnly; SameSite=Strict; Path=${prefix}`;
}

function sameToken(given: string, token: string): boolean {
  const a = Buffer.from(given, 'utf8');
  const b = Buffer.from(token, 'utf8');
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The values of every cookie named `name` in a Cookie header, in order. */
export function cookieValues(header: string | undefined, name: string): string[] {
  if (!header) return [];
  const values: string[] = [];
  for (const part of header.split(';')) {
    const at = part.indexOf('=');
    if (at > 0 && part.slice(0, at).trim() === name) values.push(part.slice(at + 1).trim());
  }
  return values;
}

/** One cookie's value from a Cookie header (the first of that name); undefined if absent. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  return cookieValues(header, name)[0];
}
