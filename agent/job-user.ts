import { chmod, lchown, lstat, mkdir, readFile, readdir } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError, JobFailedError, errnoCode } from '../common/errors.js';
import { exec } from '../common/exec.js';

/**
 * The unprivileged user an agent running as root starts its jobs as (DSTACK_JOB_USER, set by the
 * agent image's unit). The image's firewall rule (ami/job-imds-block.sh) rejects that user's
 * connections to the instance metadata service, so a job cannot fetch the instance role's
 * credentials, while the agent, as root, can.
 */
export interface JobUser {
  name: string;
  uid: number;
  gid: number;
  /** The job's HOME. */
  home: string;
}

/** Looks the user up in the passwd file (no NSS: the image's job user is a local system user). */
export async function lookupJobUser(name: string, passwdFile = '/etc/passwd'): Promise<JobUser> {
  const text = await readFile(passwdFile, 'utf8').catch((e: unknown) => {
    throw new ConfigError(`DSTACK_JOB_USER=${name}: cannot read ${passwdFile}: ${(e as Error).message}`);
  });
  for (const line of text.split('\n')) {
    const [user, , uid, gid, , home] = line.split(':');
    if (user !== name || uid === undefined || gid === undefined) continue;
    const u = Number(uid);
    const g = Number(gid);
    if (!/^\d+$/.test(uid) || !/^\d+$/.test(gid)) {
      throw new ConfigError(`DSTACK_JOB_USER=${name}: the entry for ${name} in ${passwdFile} is malformed (its uid or gid is not a number)`);
    }
    if (u === 0) throw new ConfigError(`DSTACK_JOB_USER=${name} is root: jobs must run as an unprivileged user`);
    return { name, uid: u, gid: g, home: home || '/' };
  }
  throw new ConfigError(`DSTACK_JOB_USER=${name}: no such user in ${passwdFile} (the agent image creates \`dstack-job\`; unset DSTACK_JOB_USER to run jobs as the agent's user)`);
}

/** The ids a child process is spawned with to run as `user`. */
export function spawnIds(user: JobUser | undefined): { uid: number; gid: number } | Record<string, never> {
  return user ? { uid: user.uid, gid: user.gid } : {};
}

/**
 * Gives `path` and everything under it, all made by the agent (root), to the job user. Links are
 * changed themselves and never followed, so a link the job's code tree holds cannot hand over a file
 * outside it. A folder is handed over after its contents: until then it is root's, so a process of
 * the job user (one left by an earlier job, say) cannot swap an entry for a link while it is walked.
 */
export async function chownTree(path: string, user: JobUser): Promise<void> {
  const st = await lstat(path);
  if (st.isDirectory()) for (const name of await readdir(path)) await chownTree(join(path, name), user);
  await lchown(path, user.uid, user.gid);
}

/**
 * Gives what `from` made at `path` and under it back to root, with no group or other write bit (nor
 * set-id bit): what the job user built (a venv for later jobs) becomes read-only to every job.
 * Children first, links never followed (their own mode does not matter), as in chownTree. Entries
 * of other owners (a hard link to someone else's file) are left as they are. Call it once no
 * process of the job user runs (endJobUserProcesses), so that nothing moves under the walk.
 */
export async function giveBackTree(path: string, from: JobUser): Promise<void> {
  const st = await lstat(path);
  if (st.isDirectory()) for (const name of await readdir(path)) await giveBackTree(join(path, name), from);
  if (st.uid !== from.uid) return;
  await lchown(path, 0, 0);
  if (!st.isSymbolicLink()) await chmod(path, st.mode & 0o1755);
}

/**
 * Refuses an absolute path the agent is about to create or restore into (as root) when it, or a
 * folder on the way, is a link that is not root's: one an earlier job (as the job user) left there
 * would make root write, and hand to the job user, files anywhere.
 */
export async function checkNoForeignLinks(path: string): Promise<void> {
  let at = '';
  for (const part of path.split(sep).filter((p) => p.length > 0)) {
    at = `${at}${sep}${part}`;
    const st = await lstat(at).catch((e: unknown) => {
      if (errnoCode(e) === 'ENOENT') return undefined;
      throw e;
    });
    if (st === undefined) return;
    if (st.isSymbolicLink() && st.uid !== 0) {
      throw new JobFailedError(`the artifact path ${path} goes through a link that is not root's (${at}): remove it, or declare another path`);
    }
  }
}

/**
 * Kills every process of the job user: whatever a job started in a session of its own (setsid) or
 * through a double fork outlives its process group, and as the same uid it could read the next
 * job's secrets (/proc/PID/environ) or race the agent's writes in that job's folder. `kill -KILL -1`
 * run as the user signals every process the user may signal, itself excepted; /proc then confirms
 * that none is left (zombies do not count: they run nothing). Throws if some remain after
 * `timeoutMs`. Every job of the agent runs as this user, so one agent per job user.
 */
export async function endJobUserProcesses(user: JobUser, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await exec('bash', ['-c', 'kill -KILL -1 2>/dev/null; exit 0'], { cwd: '/', env: { PATH: '/usr/bin:/bin' }, uid: user.uid, gid: user.gid });
    const left = await processesOf(user.uid);
    if (left.length === 0) return;
    if (Date.now() > deadline) throw new Error(`processes of the job user ${user.name} survive SIGKILL: ${left.slice(0, 10).join(', ')}`);
    await sleep(50);
  }
}

/** The pids of the live (not zombie) processes whose real or effective uid is `uid`. */
async function processesOf(uid: number): Promise<string[]> {
  const found: string[] = [];
  for (const pid of (await readdir('/proc')).filter((n) => /^\d+$/.test(n))) {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const uids = /^Uid:\s+(\d+)\s+(\d+)/m.exec(status);
    const state = /^State:\s+(\S)/m.exec(status)?.[1];
    if (uids && (Number(uids[1]) === uid || Number(uids[2]) === uid) && state !== 'Z' && state !== 'X') found.push(pid);
  }
  return found;
}

/**
 * Makes the agent's folders under `root` (DSTACK_HOME/local) for an agent whose jobs run as another
 * user: the job user may pass through `root`, `work`, the agent's work folder and the venv cache to
 * reach its job's folder and its venv (0711), and list none of them; the agent registry and the
 * agents' logs are closed to it (0700). Folders made earlier with wider modes are narrowed.
 */
export async function agentFolders(root: string, workRoot: string, venvRoot: string): Promise<void> {
  const modes: Array<[string, number]> = [
    [root, 0o711],
    [join(root, 'work'), 0o711],
    [workRoot, 0o711],
    [venvRoot, 0o711],
    [join(root, 'agents'), 0o700],
    [join(root, 'logs'), 0o700],
  ];
  for (const [dir, mode] of modes) {
    await mkdir(dir, { recursive: true, mode });
    // mkdir's mode is masked by the umask, and a folder that was there keeps its own.
    await chmod(dir, mode);
  }
}

/**
 * Whom the agent's jobs run as: the user DSTACK_JOB_USER names (the agent image sets `dstack-job`),
 * or, when it is unset or `aws.jobInstanceRole` is true, the agent's own user: then jobs can use
 * the instance role through IMDS, as the agent does; also when it names the agent's own user. Only
 * root (`agentUid` 0) can start jobs as another user.
 */
export async function jobUserFor(name: string | undefined, jobInstanceRole: boolean, agentUid: number | undefined, passwdFile?: string): Promise<JobUser | undefined> {
  if (name === undefined || name === '' || jobInstanceRole) return undefined;
  const user = await lookupJobUser(name, passwdFile);
  // The agent's own user: jobs run as the agent does. As a job user it would be ended with every job
  // (kill -KILL -1 as that uid), and the agent with it.
  if (agentUid === user.uid) return undefined;
  if (agentUid !== undefined && agentUid !== 0) {
    throw new ConfigError(`DSTACK_JOB_USER=${name}: the agent runs as uid ${agentUid}, and only root can start jobs as another user: run the agent as root or unset DSTACK_JOB_USER`);
  }
  return user;
}

/** The job's base environment as the job user: its HOME, USER and LOGNAME instead of the agent's. */
export function asJobUser(base: Record<string, string>, user: JobUser | undefined): Record<string, string> {
  return user ? { ...base, HOME: user.home, USER: user.name, LOGNAME: user.name } : base;
}
