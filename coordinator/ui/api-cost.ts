import type { RunSummary } from '../../common/run-index.js';

/** The answer of `GET /api/cost`: USD per UTC day (oldest first, every day of the range) and per workflow. */
export interface CostJson {
  days: Array<{ day: string; byWorkflow: Record<string, number> }>;
  total: number;
}

/** What `/api/cost` reads: the run summaries as the index has them (RunCache.list). */
export interface CostDeps {
  runs: { list(): Promise<RunSummary[]> };
  now?: () => number;
}

const DAY_MS = 86_400_000;

/**
 * `GET /api/cost?days=30`: spend of the runs that ended in the last `days` days (1 to 366, default
 * 30, today included), by the day they ended and their workflow. From the index alone: the ended
 * key carries each run's cost, so no run is read. Runs without a known cost (local agents, keys
 * written before the field existed) count nothing; runs still going are not counted until they end.
 */
export async function costApi(deps: CostDeps, query: URLSearchParams): Promise<CostJson> {
  const asked = Math.floor(Number(query.get('days') ?? '30'));
  const days = Number.isFinite(asked) ? Math.min(366, Math.max(1, asked)) : 30;
  const today = Math.floor((deps.now ?? Date.now)() / DAY_MS);
  const first = today - days + 1;
  const out = Array.from({ length: days }, (_, i) => ({ day: new Date((first + i) * DAY_MS).toISOString().slice(0, 10), byWorkflow: {} as Record<string, number> }));
  let total = 0;
  for (const s of await deps.runs.list()) {
    const cost = s.ended?.costUsd;
    const finishedMs = s.ended?.finishedAt === undefined ? NaN : Date.parse(s.ended.finishedAt);
    if (cost === null || cost === undefined || !Number.isFinite(finishedMs)) continue;
    const bucket = out[Math.floor(finishedMs / DAY_MS) - first];
    if (!bucket) continue;
    bucket.byWorkflow[s.workflow] = (bucket.byWorkflow[s.workflow] ?? 0) + cost;
    total += cost;
  }
  return { days: out, total };
}
