import { spawn } from 'node:child_process';
import { repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';

export interface UiOptions {
  /** 0: a free port. */
  port: number;
  open: boolean;
}

/** How often the simple summary source lists the index (the budgeted Store caps all listings at one a second). */
const POLL_MS = 2000;

/**
 * `dstack ui [--port N] [--no-open]`: serves the dashboard on 127.0.0.1 until Ctrl-C or SIGTERM.
 * The server and the page are loaded here only, so other commands never pay for them.
 */
export async function uiCommand(ctx: Context, o: UiOptions, signals: { terminated: Promise<void> }): Promise<number> {
  const info = await repoInfo(ctx.cwd);
  const { startUiServer } = await import('../ui/server.js');
  const { PollingRunsSource } = await import('../ui/runs-source.js');
  // TODO(merge): the Store the pages read is wrapped by coordinator/ui/store-budget.ts, and the source is coordinator/ui/run-cache.ts.
  const store = ctx.store;
  const runs = new PollingRunsSource(store, info.repoId, { pollMs: POLL_MS, onError: (e) => ctx.out.note(`dstack ui: reading runs: ${e.message}`) });
  const server = await startUiServer({ ctx, store, repoId: info.repoId, runs, port: o.port, log: (line) => ctx.out.note(line) });
  ctx.out.line(`dstack ui: ${server.url}`);
  if (o.open && hasDisplay(ctx.shellEnv)) openBrowser(server.url, (line) => ctx.out.note(line));
  await Promise.race([ctx.interrupted, signals.terminated]);
  await server.close();
  return 0;
}

/** A browser can be opened: macOS, or an X11 or Wayland display. */
function hasDisplay(env: Record<string, string | undefined>): boolean {
  return process.platform === 'darwin' || Boolean(env.DISPLAY) || Boolean(env.WAYLAND_DISPLAY);
}

function openBrowser(url: string, note: (line: string) => void): void {
  const child = spawn(process.platform === 'darwin' ? 'open' : 'xdg-open', [url], { stdio: 'ignore', detached: true, shell: false });
  child.on('error', () => note('dstack ui: could not open a browser: open the URL above'));
  child.unref();
}
