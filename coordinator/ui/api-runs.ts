import type { Store } from '../../common/ports.js';
import { TagRecordSchema } from '../../common/records/runs.js';
import type { RunSummary } from '../../common/run-index.js';
import { isFinished, loadRun, readJson, runKeys, type RunStatus, type RunView, type TagRecord } from '../../common/runs.js';
import { runCost } from '../commands/ps.js';
import type { RunsSource } from './runs-source.js';

/** One line of the runs table, as `/api/runs` sends it; null where unknown. */
export interface RunRowJson {
  runName: string;
  workflow: string;
  status: RunStatus;
  attempt: number | null;
  maxAttempts: number;
  owner: string | null;
  submittedAt: string;
  durationMs: number | null;
  instance: string | null;
  costUsd: number | null;
  tag: string | null;
}

/** The answer of `/api/runs`. */
export interface RunsPageJson {
  runs: RunRowJson[];
  total: number;
  page: number;
  pageSize: number;
  workflows: string[];
}

/** The page size of `/api/runs`. */
export const PAGE_SIZE = 50;

/**
 * The ended key's fields past `reason` (added by the index for the dashboard): optional, so a
 * summary from an older key reads as unknown.
 */
type EndedFields = NonNullable<RunSummary['ended']> & { durationMs?: number | null; costUsd?: number | null; instance?: string | null };

/** The row of a run: from the index alone when it has ended, from its records (`view`) while it has not. */
export function rowOf(s: RunSummary, view: RunView | null, tag: string | null, nowMs: number): RunRowJson {
  const ended: EndedFields | null = s.ended;
  if (!view) {
    return {
      runName: s.runName,
      workflow: s.workflow,
      status: ended?.status ?? 'submitted',
      attempt: ended?.attempt ?? null,
      maxAttempts: s.maxAttempts,
      owner: s.owner ?? null,
      submittedAt: s.submittedAt,
      durationMs: ended?.durationMs ?? null,
      instance: ended?.instance ?? null,
      costUsd: ended?.costUsd ?? null,
      tag,
    };
  }
  const first = view.attempts[0];
  const last = view.attempts[view.attempts.length - 1];
  const endMs = view.final ? Date.parse(view.final.finishedAt) : nowMs;
  return {
    runName: s.runName,
    workflow: s.workflow,
    status: view.status,
    attempt: view.attempts.length === 0 ? null : view.attempts.length,
    maxAttempts: s.maxAttempts,
    owner: view.record.owner ?? s.owner ?? null,
    submittedAt: s.submittedAt,
    durationMs: first ? Math.max(0, endMs - Date.parse(first.startedAt)) : null,
    // `type market` on EC2, as the ended key has it; a local agent's host is not an instance.
    instance: last?.instance ? `${last.instance.type} ${last.instance.market}` : null,
    costUsd: runCost(view, nowMs),
    tag: view.record.tag ?? tag,
  };
}

/**
 * The repo's tags by the run they point to. A tag record never changes once made (it is deleted and
 * made again), so each is read once; a listing says which tags exist, at most one per `ttlMs`.
 */
export class TagIndex {
  private readonly records = new Map<string, TagRecord | null>();
  private listed: { atMs: number; keys: Promise<string[]> } | undefined;
  constructor(
    private readonly store: Store,
    private readonly repoId: string,
    private readonly ttlMs = 10_000,
  ) {}

  /** Forgets the listing: after the page's own tag action. */
  invalidate(): void {
    this.listed = undefined;
  }

  async byRun(): Promise<Map<string, string>> {
    if (!this.listed || Date.now() - this.listed.atMs > this.ttlMs) {
      const keys = this.store.list(runKeys.tags(this.repoId)).then((objects) => objects.map((o) => o.key));
      this.listed = { atMs: Date.now(), keys };
      keys.catch(() => (this.listed = undefined));
    }
    const keys = await this.listed.keys;
    await Promise.all(
      keys.filter((k) => !this.records.has(k)).map(async (k) => this.records.set(k, await readJson(this.store, k, TagRecordSchema).catch(() => null))),
    );
    const out = new Map<string, string>();
    for (const k of keys) {
      const t = this.records.get(k);
      if (t && !out.has(t.runName)) out.set(t.runName, t.tag);
    }
    return out;
  }
}

/** What `/api/runs` needs: the store, the repo, the summaries and the tags. */
export interface RunsApiDeps {
  store: Store;
  repoId: string;
  runs: RunsSource;
  tags: TagIndex;
}

/**
 * `GET /api/runs?workflow=&status=&tag=&page=`: one page of the table. Finished runs come from the
 * index alone; only the unfinished runs that a filter or the page needs are read, as `ps` does.
 */
export async function runsApi(deps: RunsApiDeps, query: URLSearchParams): Promise<RunsPageJson> {
  if (deps.runs.page) {
    return deps.runs.page({ workflow: query.get('workflow') || undefined, status: query.get('status') || undefined, tag: query.get('tag') || undefined, page: Number(query.get('page')) || 1 });
  }
  const now = Date.now();
  const [summaries, tags] = await Promise.all([deps.runs.list(), deps.tags.byRun()]);
  const workflows = [...new Set(summaries.map((s) => s.workflow))].sort();
  const workflow = query.get('workflow') || undefined;
  const status = query.get('status') || undefined;
  const tag = query.get('tag')?.trim() || undefined;
  let picked = summaries.filter((s) => (workflow === undefined || s.workflow === workflow) && (tag === undefined || (tags.get(s.runName) ?? '').includes(tag)));
  const views = new Map<string, RunView>();
  const read = async (list: RunSummary[]): Promise<void> => {
    await Promise.all(
      list.filter((s) => !s.ended && !views.has(s.runName)).map(async (s) => {
        const view = await loadRun(deps.store, deps.repoId, s.runName, now).catch(() => null);
        if (view) views.set(s.runName, view);
      }),
    );
  };
  if (status !== undefined) {
    // An unfinished run's status (submitted, running, stopping) is known only from its records.
    if (!isFinished(status as RunStatus)) await read(picked);
    picked = picked.filter((s) => (views.get(s.runName)?.status ?? s.ended?.status ?? 'submitted') === status);
  }
  const pages = Math.max(1, Math.ceil(picked.length / PAGE_SIZE));
  const page = Math.min(pages, Math.max(1, Number(query.get('page')) || 1));
  const shown = picked.slice((page - 1) * PAGE_SIZE, page * PAGE_SIZE);
  await read(shown);
  return {
    runs: shown.map((s) => rowOf(s, views.get(s.runName) ?? null, tags.get(s.runName) ?? null, now)),
    total: picked.length,
    page,
    pageSize: PAGE_SIZE,
    workflows,
  };
}
