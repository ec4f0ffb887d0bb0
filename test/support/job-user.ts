import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

/**
 * A system user made for one test file (useradd --system, no home), so that what the agent does to
 * every process of its job user (it kills them all when a job ends) hits nothing else on the
 * machine. Returns its name, or why it could not be made (not root, no useradd).
 */
export function makeThrowawayUser(): { name: string } | { why: string } {
  if (process.getuid?.() !== 0) return { why: 'root' };
  if (spawnSync('sh', ['-c', 'command -v useradd && command -v userdel']).status !== 0) return { why: 'useradd and userdel (Debian package passwd)' };
  const name = `dstack-t${randomBytes(4).toString('hex')}`;
  const r = spawnSync('useradd', ['--system', '--no-create-home', '--user-group', '--home-dir', '/nonexistent', '--shell', '/bin/bash', name], { encoding: 'utf8' });
  if (r.status !== 0) return { why: `useradd to work (${r.stderr.trim()})` };
  return { name };
}

/** Ends whatever the throwaway user still runs (by its uid only) and removes the user and its group. */
export function removeThrowawayUser(name: string): void {
  spawnSync('pkill', ['-KILL', '-u', name]);
  spawnSync('userdel', ['--force', name]);
}

/**
 * A throwaway user for a test file's `before`, or the test skipped (failed under CI, which provides
 * root and useradd) when one cannot be made.
 */
export function throwawayUserOrSkip(ctx: { skip(): void }): string {
  const made = makeThrowawayUser();
  if ('why' in made) {
    if (process.env.CI) throw new Error(`this test needs ${made.why}, as CI has`);
    ctx.skip();
    throw new Error('skipped');
  }
  return made.name;
}
