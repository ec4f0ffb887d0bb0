import { openBackend } from '../../common/backend.js';
import { creatingQueueFor, provisionBackend } from '../../common/provision.js';
import { parseConfig, type DstackConfig } from '../../common/config.js';
import type { Compute, Store } from '../../common/ports.js';
import { loadRun, type RunView } from '../../common/runs.js';
import { runCommand } from '../../coordinator/commands/run.js';
import type { Context } from '../../coordinator/context.js';
import { reconcile } from '../../coordinator/fleet.js';
import type { Output } from '../../coordinator/output.js';
import { repoInfo } from '../../coordinator/code-capture.js';
import { waitFor } from './cli.js';

/** An Output that keeps what the CLI would print. */
export function captureOutput(): Output & { text: () => string } {
  let text = '';
  return {
    isTTY: false,
    line: (t = '') => void (text += `${t}\n`),
    raw: (_s, t) => void (text += t),
    note: (t) => void (text += `${t}\n`),
    json: (v) => void (text += `${JSON.stringify(v)}\n`),
    table: (h, rows) => void (text += [h, ...rows].map((r) => r.join('  ')).join('\n') + '\n'),
    progress: () => ({ update: () => undefined, done: () => undefined }),
    text: () => text,
  };
}

/**
 * A coordinator in this process, with a Compute of the test's choice (the fleet simulator, a mocked
 * EC2 fleet), acting as `owner` if given. It provisions the backend first, as `dstack config` does, unless `provision` is false.
 */
export async function coordinatorContext(o: {
  configYaml: string;
  home: string;
  cwd: string;
  compute: Compute;
  provision?: boolean;
  owner?: string;
}): Promise<Context & { config: DstackConfig; out: ReturnType<typeof captureOutput> }> {
  const config = parseConfig(o.configYaml, 'test config', o.home);
  if (o.provision ?? true) await provisionBackend(config);
  const backend = await openBackend(config);
  return {
    config,
    queueFor: creatingQueueFor(config, backend),
    store: backend.store,
    ...(backend.secrets ? { secrets: backend.secrets } : {}),
    owner: o.owner === undefined ? backend.owner : () => Promise.resolve(o.owner ?? ''),
    gcTargets: async () => (await import('../../common/gc.js')).localTargets(backend),
    compute: o.compute,
    out: captureOutput(),
    cwd: o.cwd,
    toolVersion: 'test',
    shellEnv: {},
    interrupted: new Promise(() => undefined),
    confirm: async () => true,
  };
}

/** Submits a workflow detached, as `dstack run WORKFLOW -d` would; returns the run name. */
export async function submit(ctx: Context & { out: ReturnType<typeof captureOutput> }, workflow: string): Promise<string> {
  const before = ctx.out.text().length;
  const code = await runCommand(ctx, { workflow, args: [], detach: true, dryRun: false, tag: undefined, useCache: false, overrides: { env: [], artifacts: [], deps: [] }, overrideArgv: [], waitForLink: false });
  const said = ctx.out.text().slice(before);
  if (code !== 0) throw new Error(`run ${workflow} exited ${code}: ${said}`);
  const name = /Run ([a-z]+-[a-z]+-\d+)/.exec(said)?.[1];
  if (!name) throw new Error(`no run name in: ${said}`);
  return name;
}

/** Reconciles every `everyMs` in the background, as `dstack coordinator` does, until stopped; `passes` counts the finished passes. */
export function reconcileLoop(ctx: Context, everyMs: number): { stop: () => Promise<void>; passes: () => number } {
  let stopped = false;
  let passes = 0;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const pass = (): void => {
    running = reconcile(ctx).then(
      () => undefined,
      () => undefined,
    );
    void running.then(() => {
      passes += 1;
      if (!stopped) timer = setTimeout(pass, everyMs);
    });
  };
  pass();
  return {
    passes: () => passes,
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}

/** Waits until `test` holds for the run's view. */
export async function waitForRun(store: Store, cwd: string, run: string, test: (v: RunView) => boolean, timeoutMs: number, what: string): Promise<RunView> {
  const { repoId } = await repoInfo(cwd);
  return waitFor(async () => {
    const v = await loadRun(store, repoId, run);
    return test(v) ? v : undefined;
  }, timeoutMs, what);
}
