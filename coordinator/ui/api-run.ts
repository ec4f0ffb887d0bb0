import type { Store } from '../../common/ports.js';
import { endedFacts } from '../../common/run-cost.js';
import type { RunSummary } from '../../common/run-index.js';
import { loadRun, type RunView } from '../../common/runs.js';
import { runLinks, summaryOf } from '../commands/ps.js';
import type { Context } from '../context.js';
import { rowOf, type RunRowJson } from './run-rows.js';
import type { RunsSource } from './runs-source.js';

/** The largest diff the run page shows; a larger one is cut, and says so. */
const DIFF_MAX_BYTES = 2 * 1024 * 1024;

/** One attempt as the timeline draws it. */
export interface AttemptJson {
  attempt: number;
  agent: string;
  host: string;
  instance: string | null;
  market: 'spot' | 'on-demand' | null;
  startedAt: string;
  endedAt: string | null;
  reason: string | null;
  exitCode: number | null;
}

/** What `/api/runs/:run` needs: the store and repo, the owner and secrets (for links), the summary cache (tags) and what was read before. */
export interface RunApiDeps {
  store: Store;
  repoId: string;
  ctx: Pick<Context, 'owner' | 'secrets'>;
  runs: Pick<RunsSource, 'tagOf' | 'watch'>;
  /** Runs the server has read, by name, and the runs they depend on: the only dependents it can know. */
  seen: Map<string, string[]>;
}

/** `GET /api/runs/:run`: the run's row, resolved spec, code snapshot (with its diff), deps, attempts, links and artifacts. */
export async function runApi(deps: RunApiDeps, runName: string): Promise<Record<string, unknown>> {
  const now = Date.now();
  const view = await loadRun(deps.store, deps.repoId, runName, now);
  const spec = view.record.spec;
  const pinned = spec.pinnedDeps ?? [];
  deps.seen.set(runName, pinned.map((d) => d.runName));
  // Its page listens for this run by name: the summary cache must read it to tell of its changes.
  if (!view.final) deps.runs.watch(runName);
  const [tag, links, diff] = await Promise.all([deps.runs.tagOf(runName), runLinks(deps.ctx, view).catch(() => []), readDiff(deps.store, spec.code.diffKey)]);
  const run = runRowOf(view, tag ?? null, now);
  return {
    run,
    spec,
    overrides: view.record.overrides,
    restartOf: view.record.restartOf ?? null,
    stopRequested: view.stop !== null,
    code: { commit: spec.code.commit, branch: spec.code.branch, diff: diff.text, diffCut: diff.cut },
    deps:
      pinned.length > 0
        ? pinned.map((d) => ({ kind: d.kind, name: d.name, runName: d.runName, artifacts: d.artifacts.map((a) => a.path) }))
        : spec.deps.map((d) => ({ kind: d.kind, name: d.name, runName: null, artifacts: [] })),
    dependents: [...deps.seen].filter(([, on]) => on.includes(runName)).map(([name]) => name),
    attempts: attemptsOf(view),
    links,
    artifacts: (view.artifacts?.artifacts ?? []).map((a, index) => ({ index, path: a.path, files: a.files, sizeBytes: a.sizeBytes })),
    artifactsComplete: view.artifacts?.complete ?? true,
  };
}

/**
 * The table's row of a run read in full: built as the runs table builds it (run-rows.ts), an ended
 * run from the same facts its ended index key holds, so that the two pages agree.
 */
export function runRowOf(view: RunView, tag: string | null, nowMs: number): RunRowJson {
  const base = summaryOf(view);
  const f = view.final;
  if (f) {
    const summary: RunSummary = { ...base, ended: { status: f.status, attempt: f.attempt, exitCode: f.exitCode, reason: f.reason ?? '', ...endedFacts(view, f), finishedAt: f.finishedAt } };
    return rowOf(summary, undefined, tag, nowMs);
  }
  return rowOf(base, { record: view.record, attempts: view.attempts, status: view.status }, tag, nowMs);
}

/** A bar per attempt: where it ran, when, and why it ended (the final reason on the last one). */
export function attemptsOf(view: RunView): AttemptJson[] {
  return view.attempts.map((a, i) => {
    const last = i === view.attempts.length - 1;
    const ended = a.state === 'ended' || !last || view.final !== null;
    return {
      attempt: a.attempt,
      agent: a.agentId,
      host: a.host,
      instance: a.instance ? `${a.instance.id} (${a.instance.type})` : null,
      market: a.instance?.market ?? null,
      startedAt: a.startedAt,
      endedAt: a.endedAt ?? (ended ? a.heartbeatAt : null),
      reason: a.interruption ?? (last && view.final ? view.final.reason : ended ? 'lease lapsed' : null),
      exitCode: last && view.final ? view.final.exitCode : null,
    };
  });
}

async function readDiff(store: Store, key: string | null): Promise<{ text: string; cut: boolean }> {
  if (!key) return { text: '', cut: false };
  const body = await store.get(key).catch(() => undefined);
  if (!body) return { text: '', cut: false };
  return { text: body.subarray(0, DIFF_MAX_BYTES).toString('utf8'), cut: body.length > DIFF_MAX_BYTES };
}
