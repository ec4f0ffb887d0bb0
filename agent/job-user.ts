import { lchown, lstat, mkdir, readFile, readdir } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { ConfigError } from '../common/errors.js';

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
    if (!Number.isInteger(u) || !Number.isInteger(g)) break;
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
 * `mkdir -p path`, with the folders it creates owned by the job user (the deepest first, for the
 * reason chownTree gives); folders that were there are left as they are (a workflow's absolute
 * artifact path may name a system folder). Returns the topmost folder it created, or undefined.
 */
export async function mkdirFor(path: string, user: JobUser): Promise<string | undefined> {
  const first = await mkdir(path, { recursive: true });
  if (first === undefined) return undefined;
  const made = [first];
  for (const part of path.slice(first.length).split(sep).filter((p) => p.length > 0)) made.push(join(made[made.length - 1] ?? first, part));
  for (const dir of made.reverse()) await lchown(dir, user.uid, user.gid);
  return first;
}

/**
 * Whom the agent's jobs run as: the user DSTACK_JOB_USER names (the agent image sets `dstack-job`),
 * or, when it is unset or `aws.jobInstanceRole` is true, the agent's own user: then jobs can use
 * the instance role through IMDS, as the agent does. Only root (`agentUid` 0) can start jobs as
 * another user.
 */
export async function jobUserFor(name: string | undefined, jobInstanceRole: boolean, agentUid: number | undefined, passwdFile?: string): Promise<JobUser | undefined> {
  if (name === undefined || name === '' || jobInstanceRole) return undefined;
  const user = await lookupJobUser(name, passwdFile);
  if (agentUid !== undefined && agentUid !== 0 && agentUid !== user.uid) {
    throw new ConfigError(`DSTACK_JOB_USER=${name}: the agent runs as uid ${agentUid}, and only root can start jobs as another user: run the agent as root or unset DSTACK_JOB_USER`);
  }
  return user;
}

/** The job's base environment as the job user: its HOME, USER and LOGNAME instead of the agent's. */
export function asJobUser(base: Record<string, string>, user: JobUser | undefined): Record<string, string> {
  return user ? { ...base, HOME: user.home, USER: user.name, LOGNAME: user.name } : base;
}
