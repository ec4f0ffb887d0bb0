import type { AgentInfo, Compute, Placement } from '../../common/ports.js';
import type { RunView } from '../../common/runs.js';
import type { Context } from '../context.js';
import { profileQueues } from '../fleet.js';

/** One agent on the machines page; null where unknown. */
export interface AgentJson {
  id: string;
  location: string;
  state: AgentInfo['state'];
  profileId: string | null;
  /** Since the heartbeat of the attempt it runs; null while it runs none. */
  heartbeatAgeMs: number | null;
  instanceType: string | null;
  market: 'spot' | 'on-demand' | null;
  /** USD per hour of its instance type and market in its profile's offers; null when not priced (local agents). */
  pricePerHour: number | null;
}

/** The answer of `GET /api/machines`. */
export interface MachinesJson {
  agents: AgentJson[];
  /** Visible plus in-flight jobs of each profile's queue. */
  queues: Array<{ profileId: string; depth: number }>;
  /** USD per hour of the agents with a known price, now. */
  costRatePerHour: number;
}

/** What `/api/machines` reads: Compute for the agents, the profiles' queues, and the running runs (RunCache.liveViews). */
export interface MachinesDeps extends Pick<Context, 'store' | 'queueFor'> {
  compute: Pick<Compute, 'listAgents'>;
  runs: { liveViews(): Promise<RunView[]> };
  now?: () => number;
}

/**
 * `GET /api/machines`: the agents Compute lists (local processes or EC2 instances), each with the
 * attempt it runs (its heartbeat, instance type and market, from the run's records), the price of
 * that type in its profile's offers, the queue depth per remembered profile, and the sum of the
 * known prices: what the fleet costs per hour now.
 */
export async function machinesApi(deps: MachinesDeps): Promise<MachinesJson> {
  const [agents, profiles, views] = await Promise.all([deps.compute.listAgents(), profileQueues(deps), deps.runs.liveViews()]);
  const now = (deps.now ?? Date.now)();
  const queues = await Promise.all(
    profiles.map(async ({ placement, queue }) => {
      const counts = await queue.counts();
      return { profileId: placement.profileId, depth: counts.visible + counts.inFlight };
    }),
  );
  const placements = new Map<string, Placement>(profiles.map((p) => [p.placement.profileId, p.placement]));
  // The running attempt of each agent (an agent runs one job at a time), with its run's own offers.
  const running = new Map<string, { view: RunView; attempt: RunView['attempts'][number] }>();
  for (const view of views) {
    const last = view.attempts.at(-1);
    if (last?.state === 'running') running.set(last.agentId, { view, attempt: last });
  }
  const rows = agents.map((a): AgentJson => {
    const held = running.get(a.id);
    // An idle instance has no attempt to say what it is: Compute's listing does (EC2, the simulator).
    const instance = held?.attempt.instance ?? a.instance;
    const offers = held?.view.record.placement?.offers ?? (a.profileId ? placements.get(a.profileId)?.offers : undefined) ?? [];
    const offer = instance ? offers.find((o) => o.instanceType === instance.type && o.market === instance.market) : undefined;
    return {
      id: a.id,
      location: a.location,
      state: a.state,
      profileId: a.profileId ?? null,
      heartbeatAgeMs: held ? Math.max(0, now - Date.parse(held.attempt.heartbeatAt)) : null,
      instanceType: instance?.type ?? null,
      market: instance?.market ?? null,
      pricePerHour: offer?.pricePerHour ?? null,
    };
  });
  // EC2 bills an instance from when it runs: one still starting shows its price but costs nothing yet.
  const costRatePerHour = rows.reduce((sum, r) => sum + (r.state === 'starting' ? 0 : (r.pricePerHour ?? 0)), 0);
  return { agents: rows, queues, costRatePerHour };
}
