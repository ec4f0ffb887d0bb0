import type { RunsPage } from './run-rows.js';
import type { RunsSource } from './runs-source.js';

/**
 * `GET /api/runs?workflow=&status=&tag=&page=`: one page of the table, from the summary cache.
 * Finished runs come from the index alone; only the unfinished runs on the page are read, as `ps` does.
 */
export async function runsApi(runs: Pick<RunsSource, 'page'>, query: URLSearchParams): Promise<RunsPage> {
  return runs.page({ workflow: query.get('workflow') || undefined, status: query.get('status') || undefined, tag: query.get('tag') || undefined, page: Number(query.get('page')) || 1 });
}
