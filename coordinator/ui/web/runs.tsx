import type { JSX } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { getJson, onEvent, type RunsPage as RunsAnswer, type RunStatus } from './api.js';
import { RunsPageSchema } from './schemas.js';
import { ago, formatCost, formatDuration } from './format.js';

const STATUSES: RunStatus[] = ['submitted', 'running', 'stopping', 'done', 'failed', 'stopped'];

/** The filters, as the query of `api/runs` takes them. */
interface Filters {
  workflow: string;
  status: string;
  tag: string;
  page: number;
}

function query(f: Filters): string {
  const q = new URLSearchParams();
  if (f.workflow) q.set('workflow', f.workflow);
  if (f.status) q.set('status', f.status);
  if (f.tag.trim()) q.set('tag', f.tag.trim());
  if (f.page > 1) q.set('page', String(f.page));
  return q.toString();
}

/** A status as a coloured badge. */
export function StatusBadge({ status }: { status: RunStatus }): JSX.Element {
  return <span class={`badge badge-${status}`}>{status}</span>;
}

/**
 * The Runs page: the table of the repo's runs, filtered by workflow, status and tag, refetched when
 * the server says the runs changed (server-sent events): no reload, no polling of its own.
 */
export function RunsPage(): JSX.Element {
  const [filters, setFilters] = useState<Filters>({ workflow: '', status: '', tag: '', page: 1 });
  const [data, setData] = useState<RunsAnswer | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [version, setVersion] = useState(0);
  const [now, setNow] = useState(Date.now());

  useEffect(() => onEvent('runs', () => setVersion((v) => v + 1)), []);
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 10_000);
    return () => clearInterval(t);
  }, []);
  useEffect(() => {
    let live = true;
    // The tag box waits for typing to pause.
    const t = setTimeout(() => {
      getJson(`api/runs?${query(filters)}`, RunsPageSchema).then(
        (d) => live && (setData(d), setError(null), setNow(Date.now())),
        (e: unknown) => live && setError(e instanceof Error ? e.message : String(e)),
      );
    }, 150);
    return () => {
      live = false;
      clearTimeout(t);
    };
  }, [filters, version]);

  const set = (patch: Partial<Filters>): void => setFilters({ ...filters, page: 1, ...patch });
  const pages = data ? Math.max(1, Math.ceil(data.total / data.pageSize)) : 1;
  return (
    <section>
      <h1>Runs</h1>
      <div class="filters">
        <label>
          Workflow{' '}
          <select data-filter="workflow" value={filters.workflow} onChange={(e) => set({ workflow: e.currentTarget.value })}>
            <option value="">all</option>
            {(data?.workflows ?? []).map((w) => (
              <option key={w} value={w}>
                {w}
              </option>
            ))}
          </select>
        </label>
        <label>
          Status{' '}
          <select data-filter="status" value={filters.status} onChange={(e) => set({ status: e.currentTarget.value })}>
            <option value="">all</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          Tag <input data-filter="tag" type="search" placeholder="tag" value={filters.tag} onInput={(e) => set({ tag: e.currentTarget.value })} />
        </label>
        {data && <span class="muted">{`${data.total} run${data.total === 1 ? '' : 's'}`}</span>}
      </div>
      {error && <p class="error">{error}</p>}
      <table data-testid="runs" class="grid">
        <thead>
          <tr>
            {['Run', 'Workflow', 'Status', 'Attempt', 'Owner', 'Submitted', 'Duration', 'Instance', 'Cost', 'Tag'].map((h) => (
              <th key={h}>{h}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {(data?.runs ?? []).map((r) => (
            <tr key={r.runName} data-run={r.runName}>
              <td data-col="run">
                <a href={`#/run/${encodeURIComponent(r.runName)}`}>{r.runName}</a>
              </td>
              <td data-col="workflow">{r.workflow}</td>
              <td data-col="status">
                <StatusBadge status={r.status} />
              </td>
              <td data-col="attempt">{r.attempt === null ? '-' : `${r.attempt} of ${r.maxAttempts}`}</td>
              <td data-col="owner" title={r.owner ?? ''}>
                {r.owner ? shortOwner(r.owner) : '-'}
              </td>
              <td data-col="submitted" title={r.submittedAt}>
                {ago(r.submittedAt, now)}
              </td>
              <td data-col="duration">{formatDuration(r.durationMs)}</td>
              <td data-col="instance">{r.instance ?? '-'}</td>
              <td data-col="cost">{formatCost(r.costUsd)}</td>
              <td data-col="tag">{r.tag ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {data && data.runs.length === 0 && <p class="muted">{data.total === 0 && !query(filters) ? 'No runs yet in this repo. Start one with `dstack run WORKFLOW`.' : 'No run matches the filters.'}</p>}
      {pages > 1 && (
        <div class="pager">
          <button disabled={filters.page <= 1} onClick={() => setFilters({ ...filters, page: filters.page - 1 })}>
            Newer
          </button>
          <span>{`Page ${filters.page} of ${pages}`}</span>
          <button disabled={filters.page >= pages} onClick={() => setFilters({ ...filters, page: filters.page + 1 })}>
            Older
          </button>
        </div>
      )}
    </section>
  );
}

/** An ARN's last part (`user/alice`), or `user@host` as it is. */
function shortOwner(owner: string): string {
  const arn = /^arn:[^:]*:[^:]*:[^:]*:[^:]*:(.+)$/.exec(owner);
  return arn?.[1] ?? owner;
}
