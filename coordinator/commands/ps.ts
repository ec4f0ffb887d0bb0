import { CorruptRecordError } from '../../common/records/read.js';
import { indexedOwner, type RunSummary } from '../../common/run-index.js';
import { isFinished, listRuns, loadRun, type RunRow, type RunView } from '../../common/runs.js';
import { repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';
import { ago } from '../output.js';
import { linksOf, mayOpen, reachLocal, serverToken } from '../links.js';
import { starvedProfiles } from '../fleet.js';
import { toError } from '../../common/errors.js';
import { orphanGraceMs, settleOrphans } from '../../common/orphans.js';
import { normalizeOwner, ownerLabel } from '../../common/owner.js';
import { runCost } from '../../common/run-cost.js';

export interface PsOptions {
  run: string | undefined;
  all: boolean;
  json: boolean;
}

/**
 * `dstack ps`: unfinished runs (or else the last one); `-a` for all; `RUN` for one; `--json` for
 * scripts. It only reads: it starts no agent and creates nothing, and says so (on stderr) when jobs
 * wait with no agent to take them.
 */
export async function psCommand(ctx: Context, o: PsOptions): Promise<number> {
  const code = await listCommand(ctx, o);
  await noteStarved(ctx);
  return code;
}

async function listCommand(ctx: Context, o: PsOptions): Promise<number> {
  const info = await repoInfo(ctx.cwd);
  const now = Date.now();
  let rows: RunRow[];
  if (o.run) {
    const view = await loadRun(ctx.store, info.repoId, o.run, now);
    rows = await settleOrphans(ctx.store, info.repoId, [{ summary: summaryOf(view), status: view.status, view }], orphanGraceMs(ctx.config), now);
  } else {
    rows = await settleOrphans(ctx.store, info.repoId, await listRuns(ctx.store, info.repoId, { nowMs: now, onCorrupt: (e) => ctx.out.note(`warning: ${e.message}`) }), orphanGraceMs(ctx.config), now);
    if (!o.all) {
      const active = rows.filter((r) => !isFinished(r.status));
      rows = active.length > 0 ? active : rows.slice(0, 1);
    }
  }
  if (o.json) {
    // Scripts get whole runs: this reads every listed run, unlike the table.
    const views = await Promise.all(
      rows.map((r) =>
        r.view ??
        loadRun(ctx.store, info.repoId, r.summary.runName, now).catch((e: unknown) => {
          if (!(e instanceof CorruptRecordError)) throw e;
          ctx.out.note(`warning: ${e.message}`);
          return null;
        }),
      ),
    );
    const shown = views.filter((v): v is RunView => v !== null);
    const links = await Promise.all(shown.map((v) => runLinks(ctx, v)));
    ctx.out.json(shown.map((v, i) => ({ ...toJson(v), links: links[i] ?? [] })));
    return 0;
  }
  if (rows.length === 0) {
    ctx.out.line('No runs yet in this repo. Start one with `dstack run WORKFLOW`.');
    return 0;
  }
  // The owner column appears once the listed runs have more than one known owner (a shared bucket).
  // Finished runs' owners come from the index, cut short: those are compared with the others cut
  // alike, so one owner with a long ARN is one owner; full owners (from records) still tell apart
  // two whose ARNs differ only past the cut.
  const ownerOf = (r: RunRow): string | undefined => r.view?.record.owner ?? r.summary.owner;
  const distinct = (owners: Array<string | undefined>): number => new Set(owners.flatMap((o) => (o === undefined ? [] : [normalizeOwner(o)]))).size;
  const byOwner = distinct(rows.map((r) => r.view?.record.owner)) > 1 || distinct(rows.map((r) => ownerOf(r)).map((o) => (o === undefined ? o : indexedOwner(o)))) > 1;
  const header = ['RUN', 'WORKFLOW', ...(byOwner ? ['OWNER'] : []), 'SUBMITTED', 'STATUS', 'ATTEMPT'];
  // The fleet columns appear once any listed run has run on EC2 (or the fleet simulator).
  const fleet = rows.some((r) => r.view?.attempts.some((a) => a.instance));
  if (fleet) header.push('INSTANCE', 'HEARTBEAT', 'COST');
  // The URL column appears once a listed run serves a dev environment or ports.
  const urls = await Promise.all(rows.map((r) => (r.view ? runLinks(ctx, r.view) : Promise.resolve([]))));
  const withUrl = urls.some((l) => l.length > 0);
  if (withUrl) header.push('URL');
  header.push('REASON');
  ctx.out.table(
    header,
    rows.map((row) => {
      const { summary: s, status, view } = row;
      const attempt = view ? view.attempts.length : (s.ended?.attempt ?? 0);
      const owner = ownerOf(row);
      const cells = [s.runName, s.workflow, ...(byOwner ? [owner === undefined ? '-' : ownerLabel(owner)] : [])];
      cells.push(ago(s.submittedAt, now), capitalize(status), attempt === 0 ? '-' : `${attempt} of ${s.maxAttempts}`);
      if (fleet) cells.push(...fleetCells(view, status, now));
      if (withUrl) cells.push((urls[rows.indexOf(row)] ?? []).map((l) => l.url).join(' ') || '-');
      cells.push(view?.final?.reason ?? s.ended?.reason ?? '');
      return cells;
    }),
  );
  return 0;
}

/** One line per profile whose jobs wait with no agent, pointing to `dstack coordinator`; a failure to tell is a warning. */
async function noteStarved(ctx: Context): Promise<void> {
  // With `agents: none` agents are started by hand: there is nothing dstack could start.
  if (ctx.config.backend === 'aws' && ctx.config.aws?.agents === 'none') return;
  try {
    for (const { profileId, waiting } of await starvedProfiles(ctx)) {
      const jobs = waiting === 1 ? '1 job waits' : `${waiting} jobs wait`;
      const profile = profileId === 'default' ? '' : ` for profile ${profileId}`;
      ctx.out.note(`${jobs}${profile} and no agent is there to take ${waiting === 1 ? 'it' : 'them'}: run \`dstack coordinator\` to start capacity (ps starts none)`);
    }
  } catch (e) {
    ctx.out.note(`warning: could not check for waiting jobs: ${toError(e).message}`);
  }
}

/** Instance (id, type, market) of the last attempt, age of its heartbeat while it runs, and cost so far over all attempts. */
function fleetCells(view: RunView | null, status: string, now: number): string[] {
  const last = view?.attempts[view.attempts.length - 1];
  if (!view || !last?.instance) return ['-', '-', '-'];
  const cost = runCost(view, now);
  return [
    `${last.instance.id} (${last.instance.type} ${last.instance.market})`,
    status === 'running' || status === 'stopping' ? ago(last.heartbeatAt, now) : '-',
    cost === null ? '-' : `$${cost.toFixed(4)}`,
  ];
}

// runCost lives in common/run-cost.ts (the settlers put it into the ended index key); re-exported for importers of ps.
export { runCost } from '../../common/run-cost.js';

/** A run's index summary rebuilt from its records (for a run read in full). */
export function summaryOf(view: RunView): RunSummary {
  const { runName, workflow, submittedAt, maxAttempts, owner } = view.record;
  const f = view.final;
  return { runName, workflow, submittedAt, maxAttempts, ...(owner ? { owner } : {}), ended: f ? { status: f.status, attempt: f.attempt, exitCode: f.exitCode, reason: f.reason ?? '' } : null };
}

/** The run's whole record: what reproduces it (code, spec, pinned deps, overrides) and what happened. */
function toJson(r: RunView): Record<string, unknown> {
  return {
    runName: r.record.runName,
    workflow: r.record.workflow,
    // null for runs recorded before owners existed.
    owner: r.record.owner ?? null,
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

/**
 * The links of a running run: its dev environment's (token included) and its open ports'. A job on
 * EC2 is reached through an SSH forward, which only `dstack attach` holds open: its link says so.
 */
export async function runLinks(ctx: Pick<Context, 'owner' | 'secrets'>, view: RunView): Promise<Array<{ kind: string; port: number; url: string }>> {
  const last = view.attempts[view.attempts.length - 1];
  if (view.final || last?.state !== 'running' || !last.service) return [];
  if (last.service.ssh) {
    const ports = [...(last.service.server?.ready ? [last.service.server.port] : []), ...last.service.ports.filter((p) => p.open).map((p) => p.port)];
    return ports.map((port) => ({ kind: port === last.service?.server?.port ? 'server' : 'port', port, url: `(dstack attach ${view.record.runName})` }));
  }
  const mine = last.service.server ? await mayOpen(ctx.owner, view.record.owner).catch(() => false) : true;
  const token = last.service.server && mine ? await serverToken(ctx.secrets, view.record.repoId, view.record.runName).catch(() => undefined) : undefined;
  const links = await linksOf(last.service, token, reachLocal);
  // Another owner's dev environment: shown as theirs, without the token.
  if (!mine && last.service.server?.ready) links.unshift({ kind: 'server', port: last.service.server.port, url: `(${ownerLabel(view.record.owner ?? '')}'s)` });
  return links;
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
