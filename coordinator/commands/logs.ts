import { UsageError } from '../../common/errors.js';
import { loadRun } from '../../common/runs.js';
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
  await loadRun(ctx.store, info.repoId, o.run);
  const sinceMs = o.since === undefined ? undefined : parseSince(o.since, Date.now());
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
