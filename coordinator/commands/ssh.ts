import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConflictError, UsageError, errnoCode } from '../../common/errors.js';
import { loadRun, type AttemptRecord, type RunView } from '../../common/runs.js';
import { repoInfo } from '../code-capture.js';
import type { Context } from '../context.js';
import type { SshEndpoint } from '../ssh-forward.js';
import { sshDir, userSshKey } from '../ssh-key.js';

export interface SshOptions {
  run: string;
  /** Print a `Host` block for ~/.ssh/config (and the VS Code link) instead of opening a shell. */
  config: boolean;
  /** Run this command instead of an interactive shell. */
  command: string[];
}

/** The terminal `dstack ssh` attaches to: the process's own streams, or a test's. */
export interface SshTerminal {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  stdout: NodeJS.WritableStream & { isTTY?: boolean; rows?: number; columns?: number };
  stderr: NodeJS.WritableStream;
}

/**
 * `dstack ssh RUN`: a shell in the job's folder on its EC2 instance, through the agent's SSH
 * endpoint (the user's key, the host key the attempt published). `--config` prints a `Host
 * dstack-RUN` block for ~/.ssh/config, so that `ssh dstack-RUN` and VS Code's Remote-SSH reach the
 * same place. Local jobs run on this machine: it says so and names the job's folder.
 */
export async function sshCommand(ctx: Context, o: SshOptions, terminal: SshTerminal): Promise<number> {
  const info = await repoInfo(ctx.cwd);
  const view = await loadRun(ctx.store, info.repoId, o.run);
  const attempt = runningAttempt(view);
  const local = ctx.config.backend === 'local' || ctx.config.aws?.agents === 'local';
  if (local) {
    ctx.out.line(`Run ${o.run} runs on this machine (local backend): its folder is ${attempt.cwd ?? '(not set up yet: try again in a moment)'}`);
    return 0;
  }
  const ssh = attempt.service?.ssh;
  if (!ssh && !view.record.spec.sshKey) {
    throw new ConflictError(`run ${o.run} was submitted without an SSH key (by an older dstack, or with \`aws.agents: local\`): restart it with \`dstack restart ${o.run}\` to reach it`);
  }
  if (!ssh) {
    throw new ConflictError(`run ${o.run}: its agent (${attempt.agentId}) publishes no SSH endpoint: it is older than this CLI, or was started with \`aws.sshPort: 0\``);
  }
  const key = await userSshKey(ctx.config.home);
  if (o.config) {
    ctx.out.line(await sshConfigBlock(ctx.config.home, o.run, ssh, key.privateKeyFile, attempt.cwd));
    return 0;
  }
  const { connectSsh } = await import('../ssh-forward.js');
  const client = await connectSsh(ssh, key.privateKey);
  try {
    return await session(client, o.command, terminal);
  } finally {
    client.end();
  }
}

/** The attempt that runs the job now, or one line that says why there is none. */
function runningAttempt(view: RunView): AttemptRecord {
  const name = view.record.runName;
  const last = view.attempts[view.attempts.length - 1];
  if (view.status !== 'running' || !last) {
    const why = view.status === 'submitted' ? 'it is queued: try again once `dstack ps` shows it Running' : `it is ${view.status}`;
    throw new UsageError(`run ${name} is not running: ${why}`);
  }
  return last;
}

/**
 * The `Host dstack-RUN` block, with the agent's host key pinned in `<dstack home>/ssh/known_hosts`
 * (written here, replacing an older line for the same address), and the VS Code link as a comment,
 * so that `dstack ssh RUN --config >> ~/.ssh/config` stays a valid file.
 */
export async function sshConfigBlock(home: string, run: string, ssh: SshEndpoint, identityFile: string, cwd: string | undefined): Promise<string> {
  const knownHosts = join(sshDir(home), 'known_hosts');
  const address = ssh.port === 22 ? ssh.host : `[${ssh.host}]:${ssh.port}`;
  const hostKey = ssh.hostKey.split(/\s+/).slice(0, 2).join(' ');
  let lines: string[] = [];
  try {
    lines = (await readFile(knownHosts, 'utf8')).split('\n').filter((l) => l.length > 0 && l.split(' ')[0] !== address);
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  await mkdir(sshDir(home), { recursive: true, mode: 0o700 });
  await writeFile(knownHosts, [...lines, `${address} ${hostKey}`, ''].join('\n'), { mode: 0o644 });
  const alias = `dstack-${run}`;
  return [
    `Host ${alias}`,
    `  HostName ${ssh.host}`,
    `  Port ${ssh.port}`,
    `  User ${ssh.user}`,
    `  IdentityFile ${identityFile}`,
    '  IdentitiesOnly yes',
    `  UserKnownHostsFile ${knownHosts}`,
    '  StrictHostKeyChecking yes',
    `# VS Code: vscode://vscode-remote/ssh-remote+${alias}${cwd ?? '/'}`,
  ].join('\n');
}

/** A shell (or `command`) over the connection, wired to the terminal; resolves to its exit code. */
async function session(client: import('ssh2').Client, command: string[], t: SshTerminal): Promise<number> {
  const tty = t.stdin.isTTY === true && t.stdout.isTTY === true;
  const window = { term: 'xterm-256color', rows: t.stdout.rows ?? 24, cols: t.stdout.columns ?? 80, width: 0, height: 0 };
  const channel = await new Promise<import('ssh2').ClientChannel>((resolve, reject) => {
    const done = (err: Error | undefined, ch: import('ssh2').ClientChannel): void => (err ? reject(err) : resolve(ch));
    if (command.length > 0) client.exec(command.join(' '), tty ? { pty: window } : {}, done);
    else client.shell(tty ? window : false, done);
  });
  if (tty) t.stdin.setRawMode?.(true);
  t.stdin.pipe(channel);
  channel.pipe(t.stdout, { end: false });
  channel.stderr.pipe(t.stderr, { end: false });
  const onResize = (): void => void channel.setWindow(t.stdout.rows ?? 24, t.stdout.columns ?? 80, 0, 0);
  t.stdout.on('resize', onResize);
  try {
    return await new Promise<number>((resolve) => {
      let code = 0;
      channel.on('exit', (c: number | null, signal?: string) => (code = c ?? (signal ? 128 : 1)));
      channel.on('close', () => resolve(code));
    });
  } finally {
    t.stdout.off('resize', onResize);
    t.stdin.unpipe(channel);
    if (tty) t.stdin.setRawMode?.(false);
    // stdin was resumed by the pipe: pause it so that the process can end.
    t.stdin.pause();
  }
}
