import { basename } from 'node:path';
import { spawn } from 'node:child_process';
import { PassThrough } from 'node:stream';
import * as tar from 'tar';
import { GitError } from '../common/errors.js';
import { sha256 } from '../common/hash.js';
import { exec } from '../common/exec.js';
import type { CodeRef } from '../common/code-ref.js';
import type { Store } from '../common/ports.js';

/** What `git` says about the repo around a directory. */
export interface RepoInfo {
  root: string;
  /** Stable id for the repo: its remote without scheme and `.git`, or `local/NAME-HASH` without a remote. */
  repoId: string;
  commit: string | null;
  branch: string | null;
  remoteUrl: string | null;
}

const EMPTY_TREE = '4b825dc642cb6eb9a060e54bf8d69288fbee4904';

async function git(cwd: string, args: string[]): Promise<Buffer> {
  const r = await exec('git', ['-c', 'core.quotepath=off', ...args], { cwd }).catch((e: unknown) => {
    throw new GitError('git is not installed: install git and try again', { cause: e });
  });
  if (r.code !== 0) throw new GitError(`git ${args[0] ?? ''} failed: ${r.stderr.trim().split('\n')[0] ?? ''}`);
  return r.stdout;
}

/** Finds the repo that contains `cwd`; a clear error outside one. */
export async function repoInfo(cwd: string): Promise<RepoInfo> {
  const top = await exec('git', ['rev-parse', '--show-toplevel'], { cwd }).catch(() => undefined);
  if (!top || top.code !== 0) {
    throw new GitError(`${cwd} is not inside a git repository: run dstack from your project's git repo (or \`git init\` it first)`);
  }
  const root = top.stdout.toString().trim();
  const [head, branch, remote] = await Promise.all([
    exec('git', ['rev-parse', '--verify', '-q', 'HEAD'], { cwd: root }),
    exec('git', ['symbolic-ref', '-q', '--short', 'HEAD'], { cwd: root }),
    exec('git', ['remote', 'get-url', 'origin'], { cwd: root }),
  ]);
  const commit = head.code === 0 ? head.stdout.toString().trim() : null;
  const remoteUrl = remote.code === 0 ? remote.stdout.toString().trim() : null;
  return {
    root,
    repoId: repoIdFor(root, remoteUrl),
    commit,
    branch: branch.code === 0 ? branch.stdout.toString().trim() : null,
    remoteUrl,
  };
}

/** `git@github.com:a/b.git` and `https://github.com/a/b` both become `github.com/a/b`. */
export function repoIdFor(root: string, remoteUrl: string | null): string {
  const clean = (s: string): string => s.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[.-]+/, '') || 'x';
  if (remoteUrl) {
    const m = /^(?:[a-z+]+:\/\/)?(?:[^@/]+@)?([^/:]+)[:/](.+?)(?:\.git)?\/?$/.exec(remoteUrl);
    if (m?.[1] && m[2]) return [m[1], ...m[2].split('/')].map(clean).join('/');
  }
  const hash = sha256(root).slice(0, 10);
  return `local/${clean(basename(root))}-${hash}`;
}

/** A captured working tree: the references a job spec carries, and the upload of what they name. */
export interface CapturedCode {
  ref: CodeRef;
  /** Stores the archive, diff and untracked tar (each only if the store lacks it). */
  upload(store: Store): Promise<void>;
}

/**
 * Captures the working tree: the HEAD archive (stored once per commit), the binary diff of tracked
 * files, and a tar of untracked files git does not ignore.
 */
export async function captureCode(info: RepoInfo): Promise<CapturedCode> {
  const base = info.commit ?? EMPTY_TREE;
  const [diff, untrackedList] = await Promise.all([
    git(info.root, ['diff', '--binary', '--no-color', '--no-ext-diff', '--src-prefix=a/', '--dst-prefix=b/', '--no-renames', base]),
    git(info.root, ['ls-files', '-z', '--others', '--exclude-standard']),
  ]);
  const ref: CodeRef = {
    commit: info.commit,
    branch: info.branch,
    remoteUrl: info.remoteUrl,
    archiveKey: info.commit ? `code/archives/${info.commit}.tar` : null,
    diffKey: null,
    diffSha256: null,
    untrackedKey: null,
    untrackedSha256: null,
  };
  if (diff.length > 0) {
    ref.diffSha256 = sha256(diff);
    ref.diffKey = `code/diffs/${ref.diffSha256}.patch`;
  }
  const untracked = untrackedList.toString('utf8').split('\0').filter((f) => f.length > 0).sort();
  let untrackedTar: Buffer | undefined;
  if (untracked.length > 0) {
    const chunks: Buffer[] = [];
    const stream = tar.create({ cwd: info.root, portable: true, noDirRecurse: true, mtime: new Date(0) }, untracked);
    for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
    untrackedTar = Buffer.concat(chunks);
    ref.untrackedSha256 = sha256(untrackedTar);
    ref.untrackedKey = `code/untracked/${ref.untrackedSha256}.tar`;
  }
  const upload = async (store: Store): Promise<void> => {
    await Promise.all([
      ref.archiveKey ? uploadArchive(info, ref.archiveKey, store) : undefined,
      ref.diffKey ? putOnce(store, ref.diffKey, diff) : undefined,
      ref.untrackedKey && untrackedTar ? putOnce(store, ref.untrackedKey, untrackedTar) : undefined,
    ]);
  };
  return { ref, upload };
}

async function uploadArchive(info: RepoInfo, key: string, store: Store): Promise<void> {
  if (await store.head(key)) return;
  const child = spawn('git', ['archive', '--format=tar', info.commit ?? 'HEAD'], { cwd: info.root, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? 1)));
  // Consume stdout at once: Node discards a child's unread output when it exits.
  const body = child.stdout.pipe(new PassThrough());
  await store.putStream(key, body);
  if ((await exited) !== 0) {
    await store.delete([key]);
    throw new GitError(`git archive failed: ${stderr.trim()}`);
  }
}

async function putOnce(store: Store, key: string, body: Buffer): Promise<void> {
  if (await store.head(key)) return;
  await store.put(key, body);
}
