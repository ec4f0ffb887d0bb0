import { NotFoundError, UsageError } from '../../common/errors.js';
import type { Store } from '../../common/ports.js';
import { runKeys } from '../../common/runs.js';
import { repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';
import { followRun } from '../follow.js';

export interface LogsOptions {
  run: string;
  follow: boolean;
  since: string | undefined;
}

/** `dstack logs RUN [-f] [--since 1h|ISO]`: replays a run's output, and follows it with -f. */
export async function logsCommand(ctx: Context, o: LogsOptions): Promise<number> {
  const info = await repoInfo(ctx.cwd);
  const sinceMs = o.since === undefined ? undefined : parseSince(o.since, Date.now());
  // Only the keys are looked at: the output is readable even when the run's records are damaged.
  if (!(await ctx.store.head(runKeys.record(info.repoId, o.run)))) throw new NotFoundError(`run \`${o.run}\` does not exist: see \`dstack ps -a\``);
  if (o.follow && (await isQueued(ctx.store, info.repoId, o.run))) {
    ctx.out.note(`dstack: run ${o.run} is queued: waiting for an agent to take it (Ctrl+C stops following; the run stays queued)`);
  }
  const { final } = await followRun(ctx.store, info.repoId, o.run, {
    follow: o.follow,
    pollMs: 200,
    ...(sinceMs === undefined ? {} : { sinceMs }),
    onRecord: (r) => ctx.out.raw(r.s, r.d),
    stopped: ctx.interrupted,
  });
  if (o.follow && final && final.status !== 'done') ctx.out.note(`Run ${o.run} ${final.status}: ${final.reason ?? ''}`);
  return 0;
}

/** No agent has taken the run yet: no attempt, no final status, no stop request. */
async function isQueued(store: Store, repoId: string, run: string): Promise<boolean> {
  const [attempts, final, stop] = await Promise.all([store.list(runKeys.attempts(repoId, run)), store.head(runKeys.final(repoId, run)), store.head(runKeys.stop(repoId, run))]);
  return attempts.length === 0 && !final && !stop;
}

/** `30s`, `15m`, `1h`, `2d`, `1w` before now, or an ISO 8601 time; in epoch ms. */
export function parseSince(value: string, nowMs: number): number {
  const m = /^(\d+)\s*([smhdw])$/.exec(value.trim());
  if (m) {
    const unit = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[m[2] as 's' | 'm' | 'h' | 'd' | 'w'];
    return nowMs - Number(m[1]) * unit * 1000;
  }
  const t = Date.parse(value);
  if (Number.isNaN(t)) throw new UsageError(`--since ${value}: use a duration such as 30m, 1h or 2d, or an ISO time such as 2022-11-01T10:00:00Z`);
  return t;
}
