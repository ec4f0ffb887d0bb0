import { spawn, type ChildProcess } from 'node:child_process';
import { timingSafeEqual } from 'node:crypto';
import { mkdir, readFile, readdir, readlink, writeFile } from 'node:fs/promises';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import type { AuthContext, Connection, ParsedKey, PseudoTtyInfo, ServerChannel } from 'ssh2';
import { errnoCode } from '../common/errors.js';
import type { JobUser } from './job-user.js';
import { TCP_TABLES, tcpSockets } from './connections.js';

/** What the SSH endpoint lets the current job's submitter reach. */
export interface SshJob {
  /** The submitter's public key (one OpenSSH line, the spec's `sshKey`): the only key accepted. */
  publicKey: string;
  /** The job's ports on 127.0.0.1: the only destinations a forward may open. */
  allowedPorts: number[];
  /** Where `dstack ssh` opens its shell: the job's working folder. */
  cwd: string;
  /** The job's environment, for that shell. */
  env: NodeJS.ProcessEnv;
  /** The shell runs as this user when set (the job's user on the agent image). */
  user?: JobUser;
}

/**
 * An SSH server inside the agent (ssh2), so that nothing listens unauthenticated on a public
 * address: public-key auth for the current job's key only, `direct-tcpip` forwards to the job's
 * ports on loopback only, and a shell (or a command) in the job's folder. Between jobs it accepts
 * no one, and the end of a job closes the connections of its submitter.
 */
export class AgentSshServer {
  private readonly server: ssh2.Server;
  private job: { spec: SshJob; key: ParsedKey } | undefined;
  private readonly clients = new Set<Connection>();
  private readonly children = new Set<ChildProcess>();

  /** `hostKey` is the private key in OpenSSH format (see loadHostKey). */
  constructor(hostKey: string) {
    this.server = new ssh2.Server({ hostKeys: [hostKey] }, (client) => this.onClient(client));
    // A client that goes away mid-handshake is its own problem, not the agent's.
    this.server.on('error', () => undefined);
  }

  /** Listens on `host:port` (port 0: any free port); resolves to the port. */
  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (e: Error): void => reject(e);
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        resolve((this.server.address() as AddressInfo).port);
      });
    });
  }

  /**
   * The job whose submitter may connect, or none. A new job (or none) closes every connection
   * made for the one before, and ends the shells they started.
   */
  setJob(job: SshJob | undefined): void {
    const key = job ? ssh2.utils.parseKey(job.publicKey) : undefined;
    this.job = job && key && !(key instanceof Error) ? { spec: job, key } : undefined;
    for (const child of this.children) child.kill('SIGKILL');
    this.children.clear();
    for (const client of this.clients) client.end();
    this.clients.clear();
  }

  async close(): Promise<void> {
    this.setJob(undefined);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onClient(client: Connection): void {
    client.on('error', () => undefined);
    let job: SshJob | undefined;
    client.on('authentication', (ctx) => {
      const accepted = this.check(ctx);
      if (!accepted) return ctx.reject(['publickey']);
      // A key query (no signature yet) is answered "this key would do"; the signed request logs in.
      if (ctx.method === 'publickey' && ctx.signature) {
        job = accepted;
        this.clients.add(client);
      }
      ctx.accept();
    });
    client.on('close', () => this.clients.delete(client));
    client.on('ready', () => {
      client.on('tcpip', (accept, reject, info) => {
        const local = info.destIP === '127.0.0.1' || info.destIP === 'localhost';
        if (!job || job !== this.job?.spec || !local) return reject();
        const current = job;
        void this.mayForward(current, info.destPort).then((ok) => {
          if (!ok || current !== this.job?.spec) return reject();
          const channel = accept();
          const socket = connect(info.destPort, '127.0.0.1');
          socket.on('error', () => channel.close());
          channel.on('error', () => socket.destroy());
          socket.pipe(channel).pipe(socket);
        });
      });
      client.on('session', (accept) => {
        const session = accept();
        let pty: PseudoTtyInfo | undefined;
        session.on('pty', (acceptPty, _reject, info) => {
          pty = info;
          acceptPty?.();
        });
        let child: ChildProcess | undefined;
        session.on('shell', (acceptShell) => {
          if (job) child = this.shell(acceptShell(), job, pty, undefined);
        });
        session.on('exec', (acceptExec, _reject, info) => {
          if (job) child = this.shell(acceptExec(), job, pty, info.command);
        });
        // The terminal was resized: so is the shell's pty, which signals its foreground job (SIGWINCH).
        session.on('window-change', (acceptChange, _reject, info) => {
          acceptChange?.();
          if (child?.pid !== undefined && pty) void resizePty(child.pid, info.rows, info.cols);
        });
      });
    });
  }

  /**
   * A forward may reach the job's ports, and, when jobs run as their own user, a port that a process
   * of that user listens on (what VS Code's Remote-SSH starts from the shell); never a port of the
   * agent's own user, which the job user could not open.
   */
  private async mayForward(job: SshJob, port: number): Promise<boolean> {
    if (job.allowedPorts.includes(port)) return true;
    return job.user !== undefined && (await loopbackListeners(port)).includes(job.user.uid);
  }

  /** The current job when `ctx` is a public-key login with its key (and, when signed, a valid signature). */
  private check(ctx: AuthContext): SshJob | undefined {
    const current = this.job;
    if (!current || ctx.method !== 'publickey') return undefined;
    const want = current.key.getPublicSSH();
    if (ctx.key.algo !== current.key.type || ctx.key.data.length !== want.length || !timingSafeEqual(ctx.key.data, want)) return undefined;
    if (ctx.signature && ctx.blob && current.key.verify(ctx.blob, ctx.signature, ctx.hashAlgo) !== true) return undefined;
    return current.spec;
  }

  /**
   * bash in the job's folder with the job's environment, as the job's user. With a pty requested
   * (an interactive `dstack ssh`), util-linux `script` gives bash a terminal of the client's size.
   */
  private shell(channel: ServerChannel, job: SshJob, pty: PseudoTtyInfo | undefined, command: string | undefined): ChildProcess {
    const env: NodeJS.ProcessEnv = { ...job.env, ...(pty ? { TERM: pty.term || 'xterm' } : {}) };
    const bash = command === undefined ? 'exec bash -i' : `exec bash -c ${shellQuote(command)}`;
    const [file, args] = pty
      ? ['script', ['-qfe', '-c', `stty rows ${pty.rows || 24} cols ${pty.cols || 80} 2>/dev/null; ${bash}`, '/dev/null']]
      : ['bash', command === undefined ? [] : ['-c', command]];
    const child = spawn(file, args, { cwd: job.cwd, env, stdio: 'pipe', ...(job.user ? { uid: job.user.uid, gid: job.user.gid } : {}) });
    this.children.add(child);
    channel.pipe(child.stdin).on('error', () => undefined);
    child.stdout.pipe(channel, { end: false });
    child.stderr.pipe(channel.stderr, { end: false });
    child.on('error', () => channel.close());
    child.on('close', (code, signal) => {
      this.children.delete(child);
      if (signal) channel.exit(signal.replace(/^SIG/, ''), false, '');
      else channel.exit(code ?? 1);
      channel.end();
    });
    channel.on('close', () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGHUP');
    });
    return child;
  }
}

/**
 * Sets the size of the pty that `script` (pid `scriptPid`) made for the shell: the terminal of its
 * child (its fd 0), found in /proc, gets `stty rows cols`, and the kernel sends SIGWINCH.
 */
async function resizePty(scriptPid: number, rows: number, cols: number): Promise<void> {
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    // The parent pid is the second field after the command name, which may hold spaces: read after its `)`.
    if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) !== scriptPid) continue;
    const tty = await readlink(`/proc/${pid}/fd/0`).catch(() => '');
    if (!/^\/dev\/pts\/\d+$/.test(tty)) continue;
    spawn('stty', ['-F', tty, 'rows', String(rows), 'cols', String(cols)], { stdio: 'ignore' }).on('error', () => undefined);
    return;
  }
}

/** The uids of the sockets listening on `port` on loopback or on every address (/proc/net/tcp and tcp6). */
export async function loopbackListeners(port: number, files: readonly string[] = TCP_TABLES): Promise<number[]> {
  // Addresses as the kernel prints them: 127.0.0.1, 0.0.0.0, ::1, :: and ::ffff:127.0.0.1.
  const loopback = new Set(['0100007F', '00000000', '00000000000000000000000001000000', '00000000000000000000000000000000', '0000000000000000FFFF00000100007F']);
  // State 0A: LISTEN.
  return (await tcpSockets(files)).filter((s) => s.state === '0A' && loopback.has(s.address) && s.port === port).map((s) => s.uid);
}

/**
 * The agent's host key (ed25519, OpenSSH format), made once under `dir` (0700; the key 0600) and
 * kept across restarts so that a pinned host key stays valid. Returns the private key and the
 * public line that clients pin.
 */
export async function loadHostKey(dir: string): Promise<{ privateKey: string; publicKey: string }> {
  const file = join(dir, 'ssh_host_ed25519_key');
  try {
    const privateKey = await readFile(file, 'utf8');
    return { privateKey, publicKey: (await readFile(`${file}.pub`, 'utf8')).trim() };
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'dstack-agent' });
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(`${file}.pub`, `${pair.public}\n`, { mode: 0o644 });
  // Written last: a key without its .pub (a crash between the two) would be made again.
  await writeFile(file, pair.private, { mode: 0o600 });
  return { privateKey: pair.private, publicKey: pair.public.trim() };
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
