import type { RunView } from '../../common/runs.js';
import { runLinks } from '../commands/ps.js';
import type { Context } from '../context.js';

/** One link of a running run: its dev environment's server or one of its open ports. */
export interface ServiceJson {
  runName: string;
  workflow: string;
  /** `code`, `lab` or `notebook` for a dev environment's server; `port` for a port the job opened. */
  provider: string;
  /** The URL to open; on EC2 `(dstack attach RUN)`, since only attach holds the SSH forward open. */
  url: string;
  port: number;
}

/** What `/api/services` reads: the running runs (RunCache.liveViews), and who looks, for dev environment tokens. */
export interface ServicesDeps extends Pick<Context, 'owner' | 'secrets'> {
  runs: { liveViews(): Promise<RunView[]> };
}

/**
 * `GET /api/services`: the links of the running runs, as `ps` prints them: a dev environment's
 * link carries its token only for its owner (the token is the owner's secret).
 */
export async function servicesApi(deps: ServicesDeps): Promise<{ services: ServiceJson[] }> {
  const views = (await deps.runs.liveViews()).filter((v) => v.status === 'running');
  const links = await Promise.all(views.map(async (view) => ({ view, links: await runLinks(deps, view) })));
  const services = links.flatMap(({ view, links: l }) =>
    l.map((link) => ({
      runName: view.record.runName,
      workflow: view.record.workflow,
      provider: link.kind === 'server' ? (view.attempts.at(-1)?.service?.server?.provider ?? 'server') : 'port',
      url: link.url,
      port: link.port,
    })),
  );
  // By run; within a run, in ps's order (the dev environment first).
  return { services: services.sort((a, b) => a.runName.localeCompare(b.runName)) };
}
