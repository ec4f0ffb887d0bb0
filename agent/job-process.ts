import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';

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

// Kills the job's group if the agent dies (kill -9 included), so a redelivered job never runs twice.
// Arguments are positional ($1 agent pid, $2 job group id), never interpolated into the script.
const WATCHDOG = 'while kill -0 "$1" 2>/dev/null && kill -0 -- "-$2" 2>/dev/null; do sleep 0.5; done; kill -KILL -- "-$2" 2>/dev/null; exit 0';

/** Starts `bash SCRIPT` in its own process group, with a watchdog tied to this process's life. */
export function startJob(script: string, options: { cwd: string; env: NodeJS.ProcessEnv }): JobProcess {
  const child = spawn('bash', [script], { cwd: options.cwd, env: options.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'], shell: false });
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
    });
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error('bash could not be started');
  spawn('bash', ['-c', WATCHDOG, 'dstack-watchdog', String(process.pid), String(pid)], { detached: true, stdio: 'ignore' }).unref();

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
      signalGroup('SIGTERM');
      killTimer = setTimeout(() => signalGroup('SIGKILL'), graceMs);
    },
    abort() {
      if (finished) return;
      signalGroup('SIGKILL');
    },
  };
}
