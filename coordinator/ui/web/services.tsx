import type { JSX } from 'preact';
import { WEB_LINK, shown } from './links.js';
import { ServicesSchema } from './schemas.js';
import { usePoll } from './use-poll.js';

/**
 * The dev environments and ports page: a link for each server or open port of a running run. A
 * job on EC2 is reached through `dstack attach`, which holds the SSH forward: its row says so, as
 * text. Refreshed every 5 s while shown.
 */
export function ServicesPage(): JSX.Element {
  const { data, error } = usePoll('api/services', ServicesSchema);
  return (
    <section class="page services">
      <h1>Dev environments and ports</h1>
      {error !== undefined && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <table data-testid="services">
        <thead>
          <tr>
            <th>Run</th>
            <th>Workflow</th>
            <th>Serves</th>
            <th>Port</th>
            <th>Link</th>
          </tr>
        </thead>
        <tbody>
          {data?.services.map((s) => (
            <tr key={`${s.runName}:${s.port}`} data-run={s.runName}>
              <td data-col="run">
                <a href={`#/run/${encodeURIComponent(s.runName)}`}>{s.runName}</a>
              </td>
              <td data-col="workflow">{s.workflow}</td>
              <td data-col="provider">{s.provider}</td>
              <td data-col="port">{String(s.port)}</td>
              <td data-col="link">
                {WEB_LINK.test(s.url) ? (
                  <a data-link={String(s.port)} href={s.url} target="_blank" rel="noopener noreferrer">
                    {shown(s.url)}
                  </a>
                ) : (
                  <span>{s.url}</span>
                )}
              </td>
            </tr>
          ))}
          {data?.services.length === 0 && (
            <tr class="empty">
              <td colSpan={5}>No running run serves a dev environment or a port.</td>
            </tr>
          )}
        </tbody>
      </table>
    </section>
  );
}
