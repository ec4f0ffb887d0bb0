import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Where the debootstrapped base root is kept between runs, as one tarball per day. */
export const DEBOOTSTRAP_CACHE = '/var/tmp/dstack-debootstrap-cache';
const MIRROR = 'http://deb.debian.org/debian';

export interface RunResult {
  code: number;
  output: string;
}

/** Runs a command to its end; stdout and stderr interleaved in `output`. Never rejects on exit codes. */
export function run(cmd: string, args: string[], o: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: o.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 300_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, output });
    });
  });
}

async function mustRun(cmd: string, args: string[], timeoutMs?: number): Promise<string> {
  const r = await run(cmd, args, timeoutMs === undefined ? {} : { timeoutMs });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${r.output.slice(-3000)}`);
  return r.output;
}

/**
 * A tarball of a fresh `debootstrap --variant=minbase bookworm` root, built once a day (about 30 s
 * from deb.debian.org) and reused; `builtMs` is set when this call built it.
 */
export async function baseRootTarball(): Promise<{ file: string; builtMs?: number }> {
  const day = new Date().toISOString().slice(0, 10);
  const file = join(DEBOOTSTRAP_CACHE, `bookworm-minbase-${day}.tar`);
  if (existsSync(file)) return { file };
  mkdirSync(DEBOOTSTRAP_CACHE, { recursive: true });
  const work = mkdtempSync(join(DEBOOTSTRAP_CACHE, 'build-'));
  try {
    const started = Date.now();
    await mustRun('debootstrap', ['--variant=minbase', 'bookworm', join(work, 'root'), MIRROR], 600_000);
    const builtMs = Date.now() - started;
    await mustRun('tar', ['-C', join(work, 'root'), '--numeric-owner', '-cf', join(work, 'root.tar'), '.']);
    // Renamed into place whole, so a concurrent run never sees half a tarball.
    renameSync(join(work, 'root.tar'), file);
    for (const old of readdirSync(DEBOOTSTRAP_CACHE).filter((n) => n.endsWith('.tar') && join(DEBOOTSTRAP_CACHE, n) !== file)) {
      rmSync(join(DEBOOTSTRAP_CACHE, old), { force: true });
    }
    return { file, builtMs };
  } finally {
    await removeTree(work);
  }
}

/** Mount points at or under `dir`, deepest first, from /proc/self/mountinfo. */
function mountsUnder(dir: string): string[] {
  const lines = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  const points = lines.map((l) => (l.split(' ')[4] ?? '').replace(/\\040/g, ' ')).filter((p) => p === dir || p.startsWith(`${dir}/`));
  return points.sort((a, b) => b.length - a.length);
}

/** Removes a tree only when nothing is mounted inside it, and never across file systems. */
async function removeTree(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  const left = mountsUnder(realpathSync(dir));
  if (left.length > 0) throw new Error(`not removing ${dir}: still mounted: ${left.join(', ')}`);
  await mustRun('rm', ['-rf', '--one-file-system', dir]);
}

/** A fresh copy of the base root with /proc, /dev and /sys mounted, and a cleanup that undoes it all. */
export class Chroot {
  private constructor(readonly dir: string) {}

  static async create(tarball: string): Promise<Chroot> {
    const dir = realpathSync(mkdtempSync('/var/tmp/dstack-ami-root-'));
    const root = new Chroot(dir);
    await mustRun('tar', ['-C', dir, '--numeric-owner', '-xpf', tarball]);
    await mustRun('mount', ['-t', 'proc', 'proc', join(dir, 'proc')]);
    await mustRun('mount', ['--bind', '/dev', join(dir, 'dev')]);
    await mustRun('mount', ['--bind', '/sys', join(dir, 'sys')]);
    return root;
  }

  path(p: string): string {
    return join(this.dir, p);
  }

  /**
   * `apt-get install --no-install-recommends PACKAGES` inside, from deb.debian.org, as a base image
   * that already has them would be. Services are not started (policy-rc.d), and the downloaded
   * packages are kept in DEBOOTSTRAP_CACHE/apt-archives for the next run.
   */
  async aptInstall(packages: string[]): Promise<RunResult> {
    const archives = join(DEBOOTSTRAP_CACHE, 'apt-archives');
    mkdirSync(join(archives, 'partial'), { recursive: true });
    await mustRun('mount', ['--bind', archives, this.path('var/cache/apt/archives')]);
    // Replaced, not written through: a link there would lead out of the chroot.
    rmSync(this.path('etc/resolv.conf'), { force: true });
    copyFileSync('/etc/resolv.conf', this.path('etc/resolv.conf'));
    writeFileSync(this.path('usr/sbin/policy-rc.d'), '#!/bin/sh\n# No service starts in a chroot.\nexit 101\n', { mode: 0o755 });
    const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', DEBIAN_FRONTEND: 'noninteractive' };
    const update = await run('chroot', [this.dir, 'apt-get', '-qq', 'update'], { env, timeoutMs: 300_000 });
    const r = update.code === 0 ? await run('chroot', [this.dir, 'apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...packages], { env, timeoutMs: 600_000 }) : update;
    rmSync(this.path('usr/sbin/policy-rc.d'));
    await mustRun('umount', [this.path('var/cache/apt/archives')]);
    return r;
  }

  /** Pids of the processes whose root directory is this chroot. */
  processes(): number[] {
    const pids: number[] = [];
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      try {
        if (readlinkSync(`/proc/${name}/root`) === this.dir) pids.push(Number(name));
      } catch {
        // Gone, or not ours to read.
      }
    }
    return pids;
  }

  /** Kills what still runs inside, unmounts (lazily if busy) and deletes the root. */
  async destroy(): Promise<void> {
    for (let i = 0; i < 50; i++) {
      const pids = this.processes();
      if (pids.length === 0) break;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const point of mountsUnder(this.dir)) {
      if ((await run('umount', [point])).code !== 0) await mustRun('umount', ['-l', point]);
    }
    await removeTree(this.dir);
  }
}
