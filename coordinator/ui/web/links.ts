/** A link worth making clickable: http or https only (never `javascript:` or a file path). */
export const WEB_LINK = /^https?:\/\//;

/** The link as shown: without its query, which holds a dev environment's token (it stays in the href). */
export function shown(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : `${url.slice(0, q)}?…`;
}
