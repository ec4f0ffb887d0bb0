import { spawn } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { delimiter, isAbsolute, join } from 'node:path';

export interface ExecResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs a program (no shell) and collects its output. Never throws for a non-zero exit. */
export function exec(cmd: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; extraEnv?: Record<string, string>; input?: Buffer | string; uid?: number; gid?: number } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const env = options.extraEnv ? { ...(options.env ?? process.env), ...options.extraEnv } : options.env;
    const ids = options.uid !== undefined && options.gid !== undefined ? { uid: options.uid, gid: options.gid } : {};
    const child = spawn(cmd, args, { cwd: options.cwd, env, stdio: ['pipe', 'pipe', 'pipe'], shell: false, ...ids });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') });
    });
    child.stdin.end(options.input);
  });
}

/** The executable `name` in one of `path`'s absolute folders, or undefined. */
export async function onPath(name: string, path: string): Promise<string | undefined> {
  for (const dir of path.split(delimiter)) {
    if (dir === '' || !isAbsolute(dir)) continue;
    try {
      await access(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not here
    }
  }
  return undefined;
}
