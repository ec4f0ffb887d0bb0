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
  const { BudgetedStore, BudgetClosedError } = await import('../ui/store-budget.js');
  const { RunCache } = await import('../ui/run-cache.js');
  const { machinesApi } = await import('../ui/api-machines.js');
  const { costApi } = await import('../ui/api-cost.js');
  const { servicesApi } = await import('../ui/api-services.js');
  const { openBrowser } = await import('../ui/open-browser.js');
  // The pages read through a Store that starts at most one listing a second, for all tabs together.
  const store = new BudgetedStore(ctx.store);
  let closing = false;
  // A listing cut short by the shutdown (the budget rejects what still waits) is no error for the user.
  const onError = (e: Error): void => {
    if (!closing && !(e instanceof BudgetClosedError)) ctx.out.note(`dstack ui: reading runs: ${e.message}`);
  };
  const runs = new RunCache({ store, repoId: info.repoId, tickMs: POLL_MS, onError });
  const server = await startUiServer({
    ctx,
    store,
    repoId: info.repoId,
    runs,
    port: o.port,
    log: (line) => ctx.out.note(line),
    extraRoutes: [
      { method: 'GET', path: /^\/api\/machines$/, handle: () => machinesApi({ store, queueFor: ctx.queueFor, compute: ctx.compute, runs }) },
      { method: 'GET', path: /^\/api\/cost$/, handle: (r) => costApi({ runs }, r.url.searchParams) },
      { method: 'GET', path: /^\/api\/services$/, handle: () => servicesApi({ owner: ctx.owner, ...(ctx.secrets ? { secrets: ctx.secrets } : {}), runs }) },
    ],
  });
  ctx.out.line(`dstack ui: ${server.url}`);
  const opened = o.open && hasDisplay(ctx.shellEnv) ? openBrowser(server.url, { note: (line) => ctx.out.note(line) }) : undefined;
  try {
    await Promise.race([ctx.interrupted, signals.terminated]);
  } finally {
    // The cache first (no new listing), then the server and its streams, then the budget.
    closing = true;
    runs.close();
    await server.close();
    store.close();
    opened?.remove();
  }
  return 0;
}

/** A browser can be opened: macOS, or an X11 or Wayland display. */
function hasDisplay(env: Record<string, string | undefined>): boolean {
  return process.platform === 'darwin' || Boolean(env.DISPLAY) || Boolean(env.WAYLAND_DISPLAY);
}
