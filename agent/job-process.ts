import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { endJobUserProcesses, spawnIds, type JobUser } from './job-user.js';

export interface JobExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A job's process group. `stop` is SIGTERM then SIGKILL after the grace period; `abort` is SIGKILL now. */
export interface JobProcess {
  pid: number;
  stdout: Readable;
  stderr: Readable;
  exited: Promise<JobExit>;
  stop(graceMs: number): void;
  abort(): void;
}

// Kills the job's group if the agent dies (kill -9 included), or once the lease deadline in the
// deadline file has passed: a frozen agent's pid is alive, but it can no longer refresh the file, so
// its job dies before another agent may take the job. Arguments are positional ($1 agent pid, $2 job
// group id, $3 deadline file or '', $4 the docker program and $5 the job's container, or ''), never
// interpolated into the script. A missing or unreadable file keeps the last deadline read. A job in a
// container is out of the group's reach: its container is killed and removed too.
const WATCHDOG = [
  'deadline=',
  // A container's kill goes through the daemon (~0.1–0.3 s): it starts half a second early, inside the lease's own margin.
  'early=0; [ -n "$5" ] && early=500',
  'while kill -0 -- "-$2" 2>/dev/null && kill -0 "$1" 2>/dev/null; do',
  '  if [ -n "$3" ]; then',
  '    d=; read -r d < "$3" 2>/dev/null',
  '    [[ $d =~ ^[0-9]+$ ]] && deadline=$d',
  '    us=${EPOCHREALTIME//[!0-9]/}',
  '    if [ -n "$deadline" ] && (( us / 1000 + early > deadline )); then break; fi',
  '  fi',
  '  sleep 0.2',
  'done',
  'kill -KILL -- "-$2" 2>/dev/null',
  'if [ -n "$5" ]; then "$4" kill "$5" >/dev/null 2>&1; "$4" rm -f "$5" >/dev/null 2>&1; fi',
  'exit 0',
].join('\n');

export interface StartOptions {
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** A file holding an epoch-ms time after which the job's group is killed, even if this process is frozen. */
  deadlineFile?: string;
  /** Runs the script through this command line (the sandbox) instead of `bash SCRIPT`. */
  command?: { command: string; args: string[] };
  /** Runs the job as this user (the agent runs as root): see job-user.ts. */
  user?: JobUser;
  /**
   * The command attaches to this container (`docker start -a`): stop and abort go to the container
   * (`docker stop -t`, `docker kill`), and the watchdog kills it too. `env` is the docker client's.
   */
  container?: { docker: string; name: string; env: NodeJS.ProcessEnv };
}

/** Starts `bash SCRIPT` in its own process group, with a watchdog tied to this process's life and the deadline file. */
export function startJob(script: string, options: StartOptions): JobProcess {
  const [cmd, args] = options.command ? [options.command.command, options.command.args] : ['bash', [script]];
  // With a user, Node drops the agent's supplementary groups too (setgroups) before setgid/setuid.
  const child = spawn(cmd, args, { cwd: options.cwd, env: options.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'], shell: false, ...spawnIds(options.user) });
  const exited = new Promise<JobExit>((resolve, reject) => {
    child.once('error', reject);
    // When bash ends, whatever it left running in its group ends too (as a container would),
    // so that 'close' (stdout and stderr fully read) follows.
    child.once('exit', () => {
      try {
        process.kill(-(child.pid ?? 0), 'SIGKILL');
      } catch {
        // Nothing was left.
      }
      // And, as another user, whatever left the group (setsid, a double fork) and may hold the
      // output open: no process of the job user outlives its job (the attempt waits for the proof).
      if (options.user) void endJobUserProcesses(options.user).catch(() => undefined);
    });
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error('bash could not be started');
  const container = options.container;
  spawn('bash', ['-c', WATCHDOG, 'dstack-watchdog', String(process.pid), String(pid), options.deadlineFile ?? '', container?.docker ?? '', container?.name ?? ''], {
    detached: true,
    stdio: 'ignore',
    ...(container ? { env: container.env } : {}),
  }).unref();
  const tellDocker = (args: string[]): void => {
    if (!container) return;
    const c = spawn(container.docker, [...args, container.name], { env: container.env, stdio: 'ignore' });
    c.once('error', () => undefined);
  };

  let killTimer: NodeJS.Timeout | undefined;
  let finished = false;
  void exited.then(
    () => {
      finished = true;
      clearTimeout(killTimer);
    },
    () => (finished = true),
  );
  const signalGroup = (sig: NodeJS.Signals): void => {
    try {
      process.kill(-pid, sig);
    } catch {
      // The group is already gone.
    }
  };
  return {
    pid,
    stdout: child.stdout,
    stderr: child.stderr,
    exited,
    stop(graceMs) {
      if (finished || killTimer) return;
      if (container) {
        // The daemon sends SIGTERM, then SIGKILL after the grace; the attached client then exits with the container.
        tellDocker(['stop', '--time', String(Math.max(1, Math.ceil(graceMs / 1000)))]);
        killTimer = setTimeout(() => {
          tellDocker(['kill']);
          signalGroup('SIGKILL');
        }, graceMs + 10_000);
        return;
      }
      signalGroup('SIGTERM');
      killTimer = setTimeout(() => signalGroup('SIGKILL'), graceMs);
    },
    abort() {
      if (finished) return;
      tellDocker(['kill']);
      signalGroup('SIGKILL');
    },
  };
}
