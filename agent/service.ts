import { connect } from 'node:net';
import { JobFailedError, toError } from '../common/errors.js';
import type { ServiceInfo } from '../common/records/runs.js';
import { establishedTo } from './connections.js';
import type { PreparedRun } from './providers.js';
import { CodeAuthProxy, probeOnce } from './server.js';

export interface ServiceOptions {
  prepared: PreparedRun;
  /** Called with the whole service record whenever it changes (a port opens, the server is ready); undefined once it ends. */
  publish: (info: ServiceInfo | undefined) => void;
  /** `idle_duration` in seconds: `onIdle` fires after this long with no connection to the ports. */
  idleDurationS?: number;
  onIdle: (reason: string) => void;
  /** How often ports, the server and connections are checked. */
  pollMs?: number;
  /** How often the idle check runs (it reads the kernel's TCP tables). */
  idlePollMs?: number;
}

/**
 * What a running job serves, watched by the agent: the job's ports (open once they accept a
 * connection), a dev environment's server (ready once its probe answers 200; code-server behind the
 * authenticating proxy), and the idle timer of a dev environment.
 */
export class ServiceWatch {
  private readonly info: ServiceInfo;
  private proxy: CodeAuthProxy | undefined;
  private timer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastActive = Date.now();

  constructor(private readonly o: ServiceOptions) {
    const { prepared } = o;
    this.info = { ports: prepared.ports.map((port) => ({ port, open: false })) };
    if (prepared.server) {
      const { provider, port, path, tokenParam } = prepared.server;
      this.info.server = { provider, port, path, tokenParam, ready: false };
    }
  }

  /** True when the job serves anything: a dev environment or ports. */
  static needed(prepared: PreparedRun): boolean {
    return prepared.server !== undefined || prepared.ports.length > 0;
  }

  /** Ports the job serves, the server's included: what a forward may reach and what the idle check counts. */
  get allPorts(): number[] {
    return [...this.info.ports.map((p) => p.port), ...(this.info.server ? [this.info.server.port] : [])];
  }

  /** Takes the published port (the proxy in front of code-server) before the job starts. */
  async listen(): Promise<void> {
    const server = this.o.prepared.server;
    if (server?.socket) {
      const proxy = new CodeAuthProxy(server.socket, server.token);
      try {
        await proxy.listen(server.port);
      } catch (e) {
        throw new JobFailedError(`the dev environment's port ${server.port} could not be opened on this machine (${toError(e).message}): run it again`);
      }
      this.proxy = proxy;
    }
  }

  /** Publishes the service and watches the ports, the server's readiness and the idle time, once the job has started. */
  async start(): Promise<void> {
    const server = this.o.prepared.server;
    this.o.publish(structuredClone(this.info));
    const poll = this.o.pollMs ?? 200;
    const tick = async (): Promise<void> => {
      let changed = false;
      for (const p of this.info.ports) {
        if (!p.open && (await accepts(p.port))) {
          p.open = true;
          changed = true;
        }
      }
      if (this.info.server && !this.info.server.ready && server && (await probeOnce(server.probe)) === 200) {
        this.info.server.ready = true;
        changed = true;
      }
      if (changed && !this.stopped) this.o.publish(structuredClone(this.info));
      const pending = this.info.ports.some((p) => !p.open) || (this.info.server && !this.info.server.ready);
      if (pending && !this.stopped) this.timer = setTimeout(() => void tick(), poll);
    };
    void tick();
    const idleS = this.o.idleDurationS;
    if (idleS !== undefined && idleS > 0) {
      const idlePoll = Math.min(this.o.idlePollMs ?? 1000, idleS * 250);
      const check = async (): Promise<void> => {
        if ((await establishedTo(this.allPorts)) > 0) this.lastActive = Date.now();
        if (this.stopped) return;
        if (Date.now() - this.lastActive >= idleS * 1000) {
          this.o.onIdle(`stopped after ${formatSeconds(idleS)} with no connection to the dev environment (idle_duration)`);
          return;
        }
        this.idleTimer = setTimeout(() => void check(), idlePoll);
      };
      this.idleTimer = setTimeout(() => void check(), idlePoll);
    }
  }

  /** Ends the watch and the proxy; the links are withdrawn (published as undefined) so that nobody is sent to a server that is gone. */
  async stop(): Promise<void> {
    const wasStarted = !this.stopped;
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.idleTimer);
    await this.proxy?.close();
    if (wasStarted) this.o.publish(undefined);
  }
}

/** `90` → `90s`, `3600` → `60m`, `7200` → `2h`. */
export function formatSeconds(s: number): string {
  if (s % 3600 === 0) return `${s / 3600}h`;
  if (s % 60 === 0) return `${s / 60}m`;
  return `${s}s`;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.setTimeout(1000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(false));
  });
}
