import { toError } from '../common/errors.js';
import type { RunRecord } from '../common/runs.js';
import type { Context } from './context.js';
import { reachLocal, runningAttempt, type Reach } from './links.js';
import type { Forward, SshEndpoint } from './ssh-forward.js';

/**
 * How this CLI reaches a run's ports: directly when the job runs on this machine (the local
 * backend, or AWS with `agents: local`); through an SSH forward to the agent when it runs on EC2.
 * `close` ends the forwards.
 */
export async function reachFor(ctx: Context, record: RunRecord): Promise<{ reach: Reach; forwarded: boolean; close: () => Promise<void> }> {
  if (ctx.config.backend === 'local' || ctx.config.aws?.agents === 'local') return { reach: reachLocal, forwarded: false, close: () => Promise.resolve() };
  const forwards = new SshForwards(ctx, record);
  return { reach: (port) => forwards.reach(port), forwarded: true, close: () => forwards.close() };
}

/** How long a refused or silent endpoint is left alone before the next try. */
const RETRY_MS = 5000;

/** One SSH connection to the agent of the running attempt, and a local port per job port asked for, made on first use. */
class SshForwards {
  private conn: { key: string; client: import('ssh2').Client; forwards: Map<number, Forward> } | undefined;
  /** Calls are serialized: two links of one poll must not open two connections. */
  private chain: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** The endpoint that last refused or did not answer, and when: tried again after RETRY_MS, said once. */
  private failed: { key: string; atMs: number } | undefined;

  constructor(
    private readonly ctx: Context,
    private readonly record: RunRecord,
  ) {}

  reach(remotePort: number): Promise<{ host: string; port: number } | undefined> {
    const next = this.chain.then(() => this.open(remotePort));
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async open(remotePort: number): Promise<{ host: string; port: number } | undefined> {
    if (this.closed) return undefined;
    const attempt = await runningAttempt(this.ctx.store, this.record.repoId, this.record.runName).catch(() => undefined);
    const ssh: SshEndpoint | undefined = attempt?.service?.ssh;
    if (!attempt || !ssh) return undefined;
    // A new attempt (on another instance, after a spot interruption) gets a new connection.
    const key = `${attempt.attempt}:${ssh.host}:${ssh.port}:${ssh.hostKey}`;
    if (this.conn?.key !== key) {
      await this.drop();
      const [{ connectSsh }, { userSshKey }] = await Promise.all([import('./ssh-forward.js'), import('./ssh-key.js')]);
      if (this.failed?.key === key && Date.now() - this.failed.atMs < RETRY_MS) return undefined;
      const client = await connectSsh(ssh, (await userSshKey(this.ctx.config.home)).privateKey).catch((e: unknown) => {
        if (this.failed?.key !== key) {
          this.ctx.out.note(`dstack: no forward to run ${this.record.runName} yet: ${toError(e).message} (is this machine's address in aws.allowedCidrs?); trying again`);
        }
        this.failed = { key, atMs: Date.now() };
        return undefined;
      });
      if (!client) return undefined;
      const conn = { key, client, forwards: new Map<number, Forward>() };
      // The job ended, or the instance went away: the next call connects again (to the next attempt).
      client.on('close', () => {
        if (this.conn === conn) void this.drop();
      });
      this.conn = conn;
    }
    const conn = this.conn;
    if (!conn) return undefined;
    let f = conn.forwards.get(remotePort);
    if (!f) {
      const { forwardPort } = await import('./ssh-forward.js');
      f = await forwardPort(conn.client, remotePort);
      conn.forwards.set(remotePort, f);
    }
    return { host: 'localhost', port: f.localPort };
  }

  private async drop(): Promise<void> {
    const conn = this.conn;
    this.conn = undefined;
    if (!conn) return;
    for (const f of conn.forwards.values()) await f.close();
    conn.client.end();
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.chain;
    await this.drop();
  }
}
