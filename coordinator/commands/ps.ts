import type { RunSummary } from '../../common/run-index.js';
import { isFinished, listRuns, loadRun, type RunRow, type RunView } from '../../common/runs.js';
import { repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';
import { ago } from '../output.js';

export interface PsOptions {
  run: string | undefined;
  all: boolean;
  json: boolean;
}

/** `dstack ps`: unfinished runs (or else the last one); `-a` for all; `RUN` for one; `--json` for scripts. */
export async function psCommand(ctx: Context, o: PsOptions): Promise<number> {
  const info = await repoInfo(ctx.cwd);
  const now = Date.now();
  let rows: RunRow[];
  if (o.run) {
    const view = await loadRun(ctx.store, info.repoId, o.run, now);
    rows = [{ summary: summaryOf(view), status: view.status, view }];
  } else {
    rows = await listRuns(ctx.store, info.repoId, { nowMs: now });
    if (!o.all) {
      const active = rows.filter((r) => !isFinished(r.status));
      rows = active.length > 0 ? active : rows.slice(0, 1);
    }
  }
  if (o.json) {
    // Scripts get whole runs: this reads every listed run, unlike the table.
    const views = await Promise.all(rows.map((r) => r.view ?? loadRun(ctx.store, info.repoId, r.summary.runName, now)));
    ctx.out.json(views.map(toJson));
    return 0;
  }
  if (rows.length === 0) {
    ctx.out.line('No runs yet in this repo. Start one with `dstack run WORKFLOW`.');
    return 0;
  }
  ctx.out.table(
    ['RUN', 'WORKFLOW', 'SUBMITTED', 'STATUS', 'ATTEMPT', 'REASON'],
    rows.map(({ summary: s, status, view }) => {
      const attempt = view ? view.attempts.length : (s.ended?.attempt ?? 0);
      return [s.runName, s.workflow, ago(s.submittedAt, now), capitalize(status), attempt === 0 ? '-' : `${attempt} of ${s.maxAttempts}`, view?.final?.reason ?? s.ended?.reason ?? ''];
    }),
  );
  return 0;
}

function summaryOf(view: RunView): RunSummary {
  const { runName, workflow, submittedAt, maxAttempts } = view.record;
  const f = view.final;
  return { runName, workflow, submittedAt, maxAttempts, ended: f ? { status: f.status, attempt: f.attempt, exitCode: f.exitCode, reason: f.reason ?? '' } : null };
}

/** The run's whole record: what reproduces it (code, spec, pinned deps, overrides) and what happened. */
function toJson(r: RunView): Record<string, unknown> {
  return {
    runName: r.record.runName,
    workflow: r.record.workflow,
    status: r.status,
    submittedAt: r.record.submittedAt,
    startedAt: r.attempts[0]?.startedAt ?? null,
    finishedAt: r.final?.finishedAt ?? null,
    exitCode: r.final?.exitCode ?? null,
    reason: r.final?.reason ?? null,
    cacheOf: r.final?.cacheOf ?? null,
    restartOf: r.record.restartOf ?? null,
    tag: r.record.tag ?? null,
    toolVersion: r.record.toolVersion,
    code: r.record.spec.code,
    pinnedDeps: r.record.spec.pinnedDeps,
    overrides: r.record.overrides,
    artifacts: r.artifacts?.artifacts ?? [],
    attempts: r.attempts,
    spec: r.record.spec,
  };
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
