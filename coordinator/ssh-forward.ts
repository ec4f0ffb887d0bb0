import { timingSafeEqual } from 'node:crypto';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import ssh2 from 'ssh2';
import type { Client } from 'ssh2';
import { TransportError, errnoCode } from '../common/errors.js';

/** An agent's SSH endpoint, as its attempt record publishes it (ServiceInfo.ssh). */
export interface SshEndpoint {
  host: string;
  port: number;
  user: string;
  /** The agent's host key, one OpenSSH line (`ssh-ed25519 AAAA…`): the only one the client accepts. */
  hostKey: string;
}

/** The blob of an OpenSSH public key line, as the SSH handshake sends it. */
function keyBlob(line: string): Buffer {
  return Buffer.from(line.trim().split(/\s+/)[1] ?? '', 'base64');
}

/**
 * Connects to an agent's SSH endpoint with the user's key, accepting only the host key its
 * attempt published (a man in the middle gets no forward). Resolves once logged in.
 */
export function connectSsh(ssh: SshEndpoint, privateKey: string, timeoutMs = 15_000): Promise<Client> {
  const pinned = keyBlob(ssh.hostKey);
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    client.once('ready', () => resolve(client));
    client.once('error', (e: Error & { level?: string }) => {
      // A refused key stays refused; a network error may pass.
      const refused = e.level === 'client-authentication';
      reject(new TransportError(`SSH to the agent at ${ssh.host}:${ssh.port}: ${refused ? 'this key was refused (it is not the key of the run)' : e.message}`, { cause: e, retryable: !refused }));
    });
    client.connect({
      host: ssh.host,
      port: ssh.port,
      username: ssh.user,
      privateKey,
      readyTimeout: timeoutMs,
      hostVerifier: (key: Buffer) => key.length === pinned.length && timingSafeEqual(key, pinned),
    });
  });
}

/** A local port that forwards to a port on the agent's loopback. */
export interface Forward {
  localPort: number;
  remotePort: number;
  close(): Promise<void>;
}

/**
 * Listens on 127.0.0.1 (on `localPort`, else the remote port when it is free, else any port) and
 * opens a `direct-tcpip` channel to `127.0.0.1:remotePort` on the agent for each connection.
 */
export async function forwardPort(client: Client, remotePort: number, localPort?: number): Promise<Forward> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    client.forwardOut('127.0.0.1', socket.remotePort ?? 0, '127.0.0.1', remotePort, (err, channel) => {
      if (err) return socket.destroy();
      channel.on('error', () => socket.destroy());
      socket.pipe(channel).pipe(socket);
    });
  });
  let port: number;
  try {
    port = await listen(server, localPort ?? remotePort);
  } catch (e) {
    if (localPort !== undefined || errnoCode(e) !== 'EADDRINUSE') throw e;
    port = await listen(server, 0);
  }
  return {
    localPort: port,
    remotePort,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** The forwards of a job's ports over one SSH connection; `close` ends them and the connection. */
export interface ServiceForwards {
  /** By remote port: the local port its link uses (`http://localhost:LOCAL`). */
  local: Map<number, number>;
  close(): Promise<void>;
}

/**
 * What `dstack run` and `attach` need on EC2: one connection to the agent (the user's key, the
 * pinned host key) and a local port for each of the job's ports, the same number when it is free
 * here. A connection that drops (the job ended) leaves the local ports refusing, until `close`.
 */
export async function forwardService(ssh: SshEndpoint, remotePorts: number[], privateKey: string): Promise<ServiceForwards> {
  const client = await connectSsh(ssh, privateKey);
  const forwards: Forward[] = [];
  try {
    for (const port of remotePorts) forwards.push(await forwardPort(client, port));
  } catch (e) {
    for (const f of forwards) await f.close();
    client.end();
    throw e;
  }
  return {
    local: new Map(forwards.map((f) => [f.remotePort, f.localPort])),
    close: async () => {
      for (const f of forwards) await f.close();
      client.end();
    },
  };
}
