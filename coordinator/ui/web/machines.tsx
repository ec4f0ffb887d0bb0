import type { JSX } from 'preact';
import { formatCost } from './format.js';
import { MachinesSchema } from './schemas.js';
import { usePoll } from './use-poll.js';

/** `GET /api/machines` (coordinator/ui/api-machines.ts). */
/** 7_400 -> "7s"; 190_000 -> "3m 10s"; null -> "-". */
function age(ms: number | null): string {
  if (ms === null) return '-';
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m ${s % 60}s` : `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

/**
 * The machines page: the agents (local processes or EC2 instances) with their profile, instance
 * type, market, state, heartbeat age and hourly price; the queue depth per profile; and what the
 * fleet costs per hour now. Refreshed every 5 s while shown.
 */
export function MachinesPage(): JSX.Element {
  const { data, error } = usePoll('api/machines', MachinesSchema);
  return (
    <section class="page machines">
      <h1>Machines</h1>
      {error !== undefined && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <p class="cost-rate">
        Cost rate now: <strong data-testid="cost-rate">{data ? `${formatCost(data.costRatePerHour)}/h` : '…'}</strong>
      </p>
      <h2>Agents</h2>
      <table data-testid="agents">
        <thead>
          <tr>
            <th>Agent</th>
            <th>Location</th>
            <th>Profile</th>
            <th>Type</th>
            <th>Market</th>
            <th>State</th>
            <th>Heartbeat</th>
            <th>Price</th>
          </tr>
        </thead>
        <tbody>
          {data?.agents.map((a) => (
            <tr key={a.id} data-agent={a.id}>
              <td data-col="id">{a.id}</td>
              <td data-col="location">{a.location}</td>
              <td data-col="profile">{a.profileId ?? '-'}</td>
              <td data-col="type">{a.instanceType ?? '-'}</td>
              <td data-col="market">{a.market ?? '-'}</td>
              <td data-col="state">{a.state}</td>
              <td data-col="heartbeat">{age(a.heartbeatAgeMs)}</td>
              <td data-col="price">{a.pricePerHour === null ? '-' : `${formatCost(a.pricePerHour)}/h`}</td>
            </tr>
          ))}
          {data?.agents.length === 0 && (
            <tr class="empty">
              <td colSpan={8}>No agent runs now.</td>
            </tr>
          )}
        </tbody>
      </table>
      <h2>Queues</h2>
      <table data-testid="queues">
        <thead>
          <tr>
            <th>Profile</th>
            <th>Jobs waiting or running</th>
          </tr>
        </thead>
        <tbody>
          {data?.queues.map((q) => (
            <tr key={q.profileId} data-profile={q.profileId}>
              <td data-col="profile">{q.profileId}</td>
              <td data-col="depth">{String(q.depth)}</td>
            </tr>
          ))}
          {data?.queues.length === 0 && (
            <tr class="empty">
              <td colSpan={2}>No job has been submitted yet.</td>
            </tr>
          )}
        </tbody>
      </table>
    </section>
  );
}
