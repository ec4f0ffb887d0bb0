import { readFile } from 'node:fs/promises';

/** The kernel's TCP tables: IPv4 and IPv6. */
export const TCP_TABLES = ['/proc/net/tcp', '/proc/net/tcp6'];

/** One socket of a table: its local address as the kernel prints it (hex), local port, state (hex) and owner's uid. */
export interface TcpSocket {
  address: string;
  port: number;
  state: string;
  uid: number;
}

/** Every socket in the tables (a table that can't be read gives none). */
export async function tcpSockets(files: readonly string[] = TCP_TABLES): Promise<TcpSocket[]> {
  const sockets: TcpSocket[] = [];
  for (const file of files) {
    const text = await readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      const local = f[1];
      if (!local || f[3] === undefined) continue;
      const colon = local.lastIndexOf(':');
      sockets.push({ address: local.slice(0, colon), port: parseInt(local.slice(colon + 1), 16), state: f[3], uid: Number(f[7]) });
    }
  }
  return sockets;
}

/**
 * The number of established TCP connections whose local end is one of `ports`, from the kernel's
 * tables: what a dev environment's idle check counts. Listening sockets and connections the server
 * makes elsewhere are not counted.
 */
export async function establishedTo(ports: readonly number[]): Promise<number> {
  const wanted = new Set(ports);
  // State 01: ESTABLISHED.
  return (await tcpSockets()).filter((s) => s.state === '01' && wanted.has(s.port)).length;
}
