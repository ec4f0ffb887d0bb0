import { toError } from '../common/errors.js';
import type { Demand, Placement, Queue } from '../common/ports.js';
import { readJson } from '../common/runs.js';
import type { Context } from './context.js';
import { PlacementSchema } from '../common/records/runs.js';

/** Where the placement profiles that jobs were submitted with are kept, so any coordinator can scale them. */
const PROFILES = 'fleet/profiles/';
const profileKey = (profileId: string): string => `${PROFILES}${profileId}.json`;

/** Records a profile, so that reconciling finds its queue; each submit refreshes its offers and prices. */
export async function rememberProfile(ctx: Pick<Context, 'store'>, p: Placement): Promise<void> {
  await ctx.store.put(profileKey(p.profileId), JSON.stringify(p));
}

/**
 * One reconcile pass: the backlog (visible plus in-flight jobs) of every profile's queue, and
 * capacity to match, within the configured maximum. Lost capacity is replaced here, since the
 * fleet itself never replaces instances. Returns the demand it acted on.
 */
export async function reconcile(ctx: Pick<Context, 'store' | 'compute' | 'queueFor'>): Promise<Demand[]> {
  const demand = await Promise.all(
    (await profileQueues(ctx)).map(async ({ placement, queue }) => {
      const counts = await queue.counts();
      return { placement, backlog: counts.visible + counts.inFlight };
    }),
  );
  await ctx.compute.ensureCapacity(demand);
  return demand;
}

async function rememberedProfiles(ctx: Pick<Context, 'store'>): Promise<Placement[]> {
  const keys = await ctx.store.list(PROFILES);
  return (await Promise.all(keys.map((k) => readJson(ctx.store, k.key, PlacementSchema)))).filter((p): p is Placement => p !== null);
}

/**
 * The remembered profiles, one per queue: where profiles share a queue (every profile with
 * `agents: local`, or on the local backend, is served from one queue) its backlog counts once, under
 * `default` when that profile is remembered. The backend hands out one Queue object per queue.
 */
export async function profileQueues(ctx: Pick<Context, 'store' | 'queueFor'>): Promise<Array<{ placement: Placement; queue: Queue }>> {
  const placements = (await rememberedProfiles(ctx)).sort((a, b) => Number(b.profileId === 'default') - Number(a.profileId === 'default'));
  const queues = await Promise.all(placements.map((p) => ctx.queueFor(p.profileId)));
  const seen = new Set<Queue>();
  const out: Array<{ placement: Placement; queue: Queue }> = [];
  placements.forEach((placement, i) => {
    const queue = queues[i];
    if (queue === undefined || seen.has(queue)) return;
    seen.add(queue);
    out.push({ placement, queue });
  });
  return out;
}

/**
 * The profiles whose queue has jobs waiting while no agent serves it, and how many wait: what `ps`
 * points out. It only reads (queue counts, the agent list) and starts nothing.
 */
export async function starvedProfiles(ctx: Pick<Context, 'store' | 'compute' | 'queueFor'>): Promise<Array<{ profileId: string; waiting: number }>> {
  const profiles = await profileQueues(ctx);
  if (profiles.length === 0) return [];
  const [agents, waiting] = await Promise.all([
    ctx.compute.listAgents(),
    Promise.all(profiles.map(async ({ placement, queue }) => ({ profileId: placement.profileId, waiting: (await queue.counts()).visible }))),
  ]);
  // A local agent (no profile) takes any job.
  return waiting.filter((w) => w.waiting > 0 && !agents.some((a) => a.profileId === undefined || a.profileId === w.profileId));
}

/** `dstack coordinator`: reconciles every `intervalSec` until Ctrl-C, saying what it sees when that changes. */
export async function coordinatorCommand(ctx: Context, o: { intervalSec: number }): Promise<number> {
  ctx.out.line(`Reconciling every ${o.intervalSec}s; press Ctrl+C to stop (the agents go on, and end themselves when idle).`);
  let stopped = false;
  void ctx.interrupted.then(() => (stopped = true));
  let last = '';
  while (!stopped) {
    let line: string;
    try {
      const demand = await reconcile(ctx);
      const agents = await ctx.compute.listAgents();
      const backlog = demand.filter((d) => d.backlog > 0).map((d) => `${d.placement.profileId}: ${d.backlog}`);
      line = `backlog ${backlog.length ? backlog.join(', ') : '0'}; agents ${agents.length}`;
    } catch (e) {
      line = `reconcile failed (retrying): ${toError(e).message}`;
    }
    if (line !== last) ctx.out.line(`${new Date().toISOString()} ${line}`);
    last = line;
    // Ctrl-C clears the timer too: the process ends when nothing is left pending.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, o.intervalSec * 1000);
      void ctx.interrupted.then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  return 0;
}
