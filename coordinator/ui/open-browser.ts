import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** Starts a program detached from the CLI; the real one is node's spawn. */
export type Spawner = (command: string, args: string[]) => { on(event: 'error', listener: (e: Error) => void): unknown; unref(): void };

/** What openBrowser needs besides the URL; tests inject the spawner, the platform and the temp folder. */
export interface OpenOptions {
  note: (line: string) => void;
  spawn?: Spawner;
  platform?: NodeJS.Platform;
  /** Where the private folder is made (os.tmpdir()). */
  tmpDir?: string;
}

/** The file the browser is pointed at, and how to remove it with its folder (on exit). */
export interface OpenedFile {
  dir: string;
  file: string;
  remove(): void;
}

const nodeSpawn: Spawner = (command, args) => spawn(command, args, { stdio: 'ignore', detached: true, shell: false });

/**
 * Opens the browser on `url` (which holds the token) without putting the token on a command line,
 * where every local user reads it in /proc/PID/cmdline: as Jupyter does, the URL goes into an HTML
 * file (mode 0600, in a fresh 0700 folder) that redirects to it, and the browser opener is given
 * that file's `file://` URL. The caller removes the file when the dashboard stops.
 */
export function openBrowser(url: string, o: OpenOptions): OpenedFile {
  // mkdtemp makes the folder 0700: no other user may list or read it.
  const dir = mkdtempSync(join(o.tmpDir ?? tmpdir(), 'dstack-ui-'));
  const file = join(dir, 'open.html');
  writeFileSync(file, redirectPage(url), { mode: 0o600, flag: 'wx' });
  const platform = o.platform ?? process.platform;
  const child = (o.spawn ?? nodeSpawn)(platform === 'darwin' ? 'open' : 'xdg-open', [pathToFileURL(file).href]);
  child.on('error', () => o.note('dstack ui: could not open a browser: open the URL above'));
  child.unref();
  return { dir, file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A page that goes to `url` at once: a meta refresh, a script for browsers that ignore it, and a link. */
export function redirectPage(url: string): string {
  const attr = url.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  // JSON is a JS string literal; `<` escaped so that no `</script>` can end the script early.
  const js = JSON.stringify(url).replace(/</g, '\\u003c');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">
<meta http-equiv="refresh" content="0;url=${attr}">
<title>dstack ui</title>
<script>window.location.replace(${js});</script></head>
<body><p>Opening the dstack dashboard… If nothing happens, <a href="${attr}" rel="noreferrer">open it here</a>.</p></body></html>
`;
}
