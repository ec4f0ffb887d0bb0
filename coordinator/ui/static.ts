import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HttpError } from './http.js';

/**
 * The bundle's folder (`npm run build` writes dist/ui/). From the built CLI this module is a chunk
 * in dist/ (or dist/coordinator/ui/); from source it is coordinator/ui/, two levels below the repo.
 */
function bundleDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, 'ui'), join(here, '..', 'ui'), join(here, '..', '..', 'ui'), join(here, '..', '..', 'dist', 'ui')];
  return candidates.find((d) => existsSync(join(d, 'app.js'))) ?? join(here, '..', '..', 'dist', 'ui');
}

const DIR = bundleDir();

/**
 * The one page: the app mounts itself into #app. No inline script, so the policy can forbid them.
 * Relative URLs: the page is served at the secret prefix (`/s/<P>/`), and so is all it loads.
 */
const INDEX_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>dstack</title><link rel="icon" href="data:,"><link rel="stylesheet" href="app.css"></head>
<body><div id="app"></div><script type="module" src="app.js"></script></body></html>
`;

const TYPES: Record<string, string> = { js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8', map: 'application/json; charset=utf-8' };

/** Scripts only from this origin: a log line that got through as markup still could not run one. */
const POLICY = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/** Serves `/` (the page) and the bundle's files by their flat names, `pathname` being below the prefix; anything else is 404. */
export async function serveStatic(pathname: string, res: ServerResponse): Promise<void> {
  const headers = { 'content-security-policy': POLICY, 'x-content-type-options': 'nosniff', 'cache-control': 'no-cache' };
  if (pathname === '/' || pathname === '/index.html') {
    res.writeHead(200, { ...headers, 'content-type': 'text/html; charset=utf-8' });
    res.end(INDEX_HTML);
    return;
  }
  if (pathname === '/favicon.ico') {
    res.writeHead(204, headers);
    res.end();
    return;
  }
  const m = /^\/([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)\.(js|css|map)$/.exec(pathname);
  if (!m) throw new HttpError(404, 'not found');
  const body = await readFile(join(DIR, `${m[1] ?? ''}.${m[2] ?? ''}`)).catch(() => undefined);
  if (!body) throw new HttpError(404, m[1] === 'app' ? `the UI bundle is missing from ${DIR}: run \`npm run build\`` : 'not found');
  res.writeHead(200, { ...headers, 'content-type': TYPES[m[2] ?? ''] ?? 'application/octet-stream', 'content-length': body.length });
  res.end(body);
}
