import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** The cookie that carries the token once the URL has been opened. */
export const COOKIE = 'dstack_ui';

/** A fresh token: 32 random bytes, base64url (43 characters). */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

/** What the gate decided about one request. */
export type Gate =
  | { kind: 'pass' }
  /** `GET /?token=T`: the token becomes a cookie and the browser goes to `/`, so the token leaves the address bar. */
  | { kind: 'login' }
  | { kind: 'deny'; status: 401 | 403; message: string };

/** What the gate checks a request against: the token and the port the server listens on. */
export interface GateOptions {
  token: string;
  port: number;
}

/**
 * Decides whether a request may go on. The Host header must name this server on the loopback (a
 * page on another site that rebinds its DNS name to 127.0.0.1 sends its own name); a POST must
 * come from this origin or from no page at all (curl); and the token must come in the cookie or
 * as `?token=`. Tokens are compared in constant time.
 */
export function checkRequest(req: IncomingMessage, url: URL, o: GateOptions): Gate {
  const host = req.headers.host ?? '';
  if (host !== `127.0.0.1:${o.port}` && host !== `localhost:${o.port}`) return { kind: 'deny', status: 403, message: 'forbidden: unknown Host' };
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== `http://${host}`) return { kind: 'deny', status: 403, message: 'forbidden: cross-origin request' };
  }
  const query = url.searchParams.get('token');
  if (query !== null && sameToken(query, o.token)) return url.pathname === '/' && req.method === 'GET' ? { kind: 'login' } : { kind: 'pass' };
  const cookie = cookieValue(req.headers.cookie, COOKIE);
  if (cookie !== undefined && sameToken(cookie, o.token)) return { kind: 'pass' };
  return { kind: 'deny', status: 401, message: 'unauthorized: open the URL that `dstack ui` printed (it holds the token)' };
}

/** The Set-Cookie header of a login: not readable by scripts, not sent by other sites. */
export function loginCookie(token: string): string {
  return `${COOKIE}=${token}; HttpOnly; SameSite=Strict; Path=/`;
}

function sameToken(given: string, token: string): boolean {
  const a = Buffer.from(given, 'utf8');
  const b = Buffer.from(token, 'utf8');
  return a.length === b.length && timingSafeEqual(a, b);
}

/** One cookie's value from a Cookie header; undefined if absent. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const at = part.indexOf('=');
    if (at > 0 && part.slice(0, at).trim() === name) return part.slice(at + 1).trim();
  }
  return undefined;
}
