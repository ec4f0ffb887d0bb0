import { isFinished, listRuns, loadRun, type RunView } from '../../common/runs.js';
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
  let runs: RunView[];
  if (o.run) {
    runs = [await loadRun(ctx.store, info.repoId, o.run, now)];
  } else {
    runs = await listRuns(ctx.store, info.repoId, now);
    if (!o.all) {
      const active = runs.filter((r) => !isFinished(r.status));
      runs = active.length > 0 ? active : runs.slice(0, 1);
    }
  }
  if (o.json) {
    ctx.out.json(runs.map(toJson));
    return 0;
  }
  if (runs.length === 0) {
    ctx.out.line('No runs yet in this repo. Start one with `dstack run WORKFLOW`.');
    return 0;
  }
  ctx.out.table(
    ['RUN', 'WORKFLOW', 'SUBMITTED', 'STATUS', 'ATTEMPT', 'REASON'],
    runs.map((r) => [
      r.record.runName,
      r.record.workflow,
      ago(r.record.submittedAt, now),
      capitalize(r.status),
      r.attempts.length === 0 ? '-' : `${r.attempts.length} of ${r.record.maxAttempts}`,
      r.final?.reason ?? '',
    ]),
  );
  return 0;
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
