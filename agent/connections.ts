import { readFile } from 'node:fs/promises';

/**
 * The number of established TCP connections whose local end is one of `ports`, from the kernel's
 * tables (/proc/net/tcp and tcp6): what a dev environment's idle check counts. Listening sockets
 * and connections the server makes elsewhere are not counted.
 */
export async function establishedTo(ports: readonly number[]): Promise<number> {
  const wanted = new Set(ports);
  let n = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(table, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const local = fields[1];
      const state = fields[3];
      if (!local || state !== '01') continue;
      const port = parseInt(local.slice(local.lastIndexOf(':') + 1), 16);
      if (wanted.has(port)) n++;
    }
  }
  return n;
}
