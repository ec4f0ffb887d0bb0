/** A hash route: `#/runs`, `#/run/<name>`, `#/machines`…; anything else is the runs. */
export type Route = { page: string; runName?: string };

/**
 * The route a location hash names, among the `pages` of the nav. A malformed run name
 * (`#/run/%E0`, which decodeURIComponent refuses) is the runs page, not an error that blanks the app.
 */
export function parseRoute(hash: string, pages: readonly string[]): Route {
  const parts = hash.replace(/^#\/?/, '').split('/');
  if (parts[0] === 'run' && parts[1]) {
    try {
      return { page: 'run', runName: decodeURIComponent(parts[1]) };
    } catch {
      return { page: 'runs' };
    }
  }
  return { page: parts[0] !== undefined && pages.includes(parts[0]) ? parts[0] : 'runs' };
}
