import { request } from 'node:http';
import type { Locator } from 'playwright-core';
import { spawnCli, waitFor, type SpawnedCli } from './cli.js';

/** The line `dstack ui` prints once it listens (design15: "dstack ui: http://127.0.0.1:PORT/?token=TOKEN"). */
export const UI_LINE = /^dstack ui: (http:\/\/127\.0\.0\.1:(\d+)\/\?token=([A-Za-z0-9_-]+))$/m;

/** A running `dstack ui --no-open`, started from the built CLI. */
export interface UiServer {
  /** The URL the command printed, token included. */
  url: string;
  /** `http://127.0.0.1:PORT`. */
  origin: string;
  /** `http://127.0.0.1:PORT/s/<P>/`: where the login redirects; the app, its API and its cookie live below it. */
  base: string;
  /** `/s/<P>/`. */
  prefix: string;
  token: string;
  /** What the command printed so far. */
  out: SpawnedCli['out'];
  /** SIGTERM, then SIGKILL after `graceMs` (default 5 s); resolves with the exit code (-1 after SIGKILL). */
  stop(graceMs?: number): Promise<number>;
}

/**
 * Starts `dstack ui --no-open` in `cwd` against the dstack home `home` and waits (up to `timeoutMs`,
 * default 30 s) for its URL line. Rejects with the command's output if it exits or stays silent.
 */
export async function startUi(o: { cwd: string; home: string; args?: string[]; timeoutMs?: number }): Promise<UiServer> {
  // No DISPLAY: --no-open already says not to open a browser; this keeps a test from opening one if it did.
  const cli = spawnCli(['ui', '--no-open', ...(o.args ?? [])], { cwd: o.cwd, home: o.home, env: { DISPLAY: '', WAYLAND_DISPLAY: '' } });
  let closed = false;
  void cli.exited.then(() => (closed = true), () => (closed = true));
  const stop = async (graceMs = 5_000): Promise<number> => {
    if (!closed) cli.child.kill('SIGTERM');
    const timer = setTimeout(() => cli.child.kill('SIGKILL'), graceMs);
    try {
      return await cli.exited;
    } finally {
      clearTimeout(timer);
    }
  };
  const deadline = Date.now() + (o.timeoutMs ?? 30_000);
  for (;;) {
    const m = UI_LINE.exec(cli.out.stdout);
    if (m) {
      const url = m[1] ?? '';
      const origin = new URL(url).origin;
      // The printed URL logs in and redirects to the secret prefix: that is where the app is.
      const login = await rawRequest(url).catch((e: Error) => e);
      const prefix = login instanceof Error ? '' : String(login.headers.location ?? '');
      if (!/^\/s\/[A-Za-z0-9_-]+\/$/.test(prefix)) {
        await stop(1_000);
        throw new Error(`the printed URL did not redirect to the app's prefix: ${login instanceof Error ? login.message : `${login.status} location=${prefix}`}`);
      }
      return { url, origin, base: origin + prefix, prefix, token: m[3] ?? '', out: cli.out, stop };
    }
    if (closed || Date.now() > deadline) {
      await stop(1_000);
      throw new Error(`dstack ui printed no URL line${closed ? ' and exited' : ' in time'}:\nstdout: ${cli.out.stdout}\nstderr: ${cli.out.stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** An HTTP answer, read whole. */
export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/**
 * A plain HTTP request outside the browser, following no redirect, with the headers given as they
 * are (a `Host` or `Origin` a browser would not let a page choose included).
 */
export function rawRequest(url: string, o: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: o.method ?? 'GET', headers: o.headers ?? {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.setTimeout(15_000, () => req.destroy(new Error(`no answer from ${new URL(url).pathname} in 15 s`)));
    req.on('error', reject);
    req.end(o.body);
  });
}

/** Logs in as a browser would (`GET /?token=`) and returns the `name=value` of the cookie the server set. */
export async function loginCookie(ui: UiServer): Promise<string> {
  const res = await rawRequest(ui.url);
  const setCookie = res.headers['set-cookie']?.[0];
  if (res.status !== 302 || setCookie === undefined) throw new Error(`GET /?token= answered ${res.status} without a cookie`);
  return setCookie.split(';')[0] ?? '';
}

/** Waits until the first element of `l` has text matching `re`; the error says what it read last. */
export async function waitForText(l: Locator, re: RegExp, what: string, timeoutMs = 30_000): Promise<string> {
  let last = null as string | null;
  try {
    return await waitFor(async () => {
      last = await l.first().textContent({ timeout: 500 }).catch(() => null);
      return last !== null && re.test(last) ? last : undefined;
    }, timeoutMs, what);
  } catch (e) {
    throw new Error(`${(e as Error).message}: expected ${String(re)}, got ${last === null ? 'no element' : JSON.stringify(last.slice(0, 300))}`);
  }
}
