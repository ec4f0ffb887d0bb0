import { basename, join } from 'node:path';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat } from 'node:fs/promises';
import { PassThrough, Transform, pipeline, type Readable } from 'node:stream';
import * as tar from 'tar';
import { GitError } from '../common/errors.js';
import { sha256 } from '../common/hash.js';
import { exec } from '../common/exec.js';
import type { CodeRef } from '../common/code-ref.js';
import type { Store } from '../common/ports.js';
import { formatBytes } from './output.js';

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

export interface CaptureOptions {
  /** Untracked files over this total get a warning that names the biggest (`untrackedWarnBytes` in config). */
  untrackedWarnBytes?: number;
  /** Where the warning goes (the CLI's stderr). */
  warn?: (line: string) => void;
}

/** Biggest untracked files named in the size warning. */
const BIGGEST_SHOWN = 5;

/**
 * Captures the working tree: the HEAD archive (stored once per commit), the binary diff of tracked
 * files, and a tar of untracked files git does not ignore. The diff and the tar are streamed, twice at
 * most (once to name them by their hash, once into the store when it lacks them), never held in memory.
 * Submodules are refused: the job would see an empty folder.
 */
export async function captureCode(info: RepoInfo, options: CaptureOptions = {}): Promise<CapturedCode> {
  const base = info.commit ?? EMPTY_TREE;
  const diffArgs = ['diff', '--binary', '--no-color', '--no-ext-diff', '--src-prefix=a/', '--dst-prefix=b/', '--no-renames', base];
  const diff = (): Readable => gitStream(info.root, diffArgs);
  const [diffHash, untrackedList, staged] = await Promise.all([
    hashStream(diff()),
    git(info.root, ['ls-files', '-z', '--others', '--exclude-standard']),
    git(info.root, ['ls-files', '-z', '--stage']),
  ]);
  refuseSubmodules(staged);
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
  if (diffHash.sizeBytes > 0) {
    ref.diffSha256 = diffHash.sha;
    ref.diffKey = `code/diffs/${ref.diffSha256}.patch`;
  }
  const untracked = untrackedList.toString('utf8').split('\0').filter((f) => f.length > 0).sort();
  if (untracked.length > 0) {
    await warnIfLarge(info.root, untracked, options);
    ref.untrackedSha256 = (await hashStream(untrackedTar(info.root, untracked))).sha;
    ref.untrackedKey = `code/untracked/${ref.untrackedSha256}.tar`;
  }
  const upload = async (store: Store): Promise<void> => {
    await Promise.all([
      ref.archiveKey ? uploadArchive(info, ref.archiveKey, store) : undefined,
      ref.diffKey && ref.diffSha256 ? uploadChecked(store, ref.diffKey, ref.diffSha256, diff, 'tracked files') : undefined,
      ref.untrackedKey && ref.untrackedSha256
        ? uploadChecked(store, ref.untrackedKey, ref.untrackedSha256, () => untrackedTar(info.root, untracked), 'untracked files')
        : undefined,
    ]);
  };
  return { ref, upload };
}

/** `git archive` leaves a submodule out; a job that silently misses it is worse than a clear refusal. */
function refuseSubmodules(staged: Buffer): void {
  const gitlinks = staged
    .toString('utf8')
    .split('\0')
    .filter((line) => line.startsWith('160000 '))
    .map((line) => line.slice(line.indexOf('\t') + 1));
  if (gitlinks.length > 0) {
    const names = gitlinks.map((p) => `\`${p}\``).join(', ');
    throw new GitError(
      `${names} ${gitlinks.length === 1 ? 'is a git submodule' : 'are git submodules'}, which dstack does not capture (the job would see an empty folder): copy the files into the repo, or remove the submodule with \`git rm ${gitlinks[0] ?? ''}\``,
    );
  }
}

/** The untracked files as a deterministic tar stream (links stay links). */
function untrackedTar(root: string, files: string[]): Readable {
  return tar.create({ cwd: root, portable: true, noDirRecurse: true, mtime: new Date(0) }, files) as unknown as Readable;
}

/** A git command's output as a stream, which fails if git does. */
function gitStream(cwd: string, args: string[]): Readable {
  const out = new PassThrough();
  const child = spawn('git', ['-c', 'core.quotepath=off', ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.pipe(out, { end: false });
  child.on('error', (e) => out.destroy(new GitError('git is not installed: install git and try again', { cause: e })));
  child.on('close', (code) => {
    if (code === 0) out.end();
    else out.destroy(new GitError(`git ${args[0] ?? ''} failed: ${stderr.trim().split('\n')[0] ?? ''}`));
  });
  return out;
}

async function hashStream(body: Readable): Promise<{ sha: string; sizeBytes: number }> {
  const hash = createHash('sha256');
  let sizeBytes = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    hash.update(chunk);
    sizeBytes += chunk.length;
  }
  return { sha: hash.digest('hex'), sizeBytes };
}

/**
 * Streams what `make` produces into the store under its hash, made again rather than kept from the
 * hashing pass; refused, and never stored half, if it no longer matches the hash.
 */
async function uploadChecked(store: Store, key: string, sha: string, make: () => Readable, what: string): Promise<void> {
  if (await store.head(key)) return;
  const hash = createHash('sha256');
  const checked = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      done(null, chunk);
    },
    flush(done) {
      done(hash.digest('hex') === sha ? null : new GitError(`${what} changed while \`dstack run\` was uploading them: run it again`));
    },
  });
  // An error on either side ends the other, so the object is never written half.
  pipeline(make(), checked, () => undefined);
  await store.putStream(key, checked);
}

/** Warns when the untracked files add up to more than the limit, naming the biggest: they are uploaded with every change. */
async function warnIfLarge(root: string, files: string[], options: CaptureOptions): Promise<void> {
  const limit = options.untrackedWarnBytes;
  if (limit === undefined || !options.warn) return;
  const sizes = await Promise.all(files.map(async (f) => ({ f, sizeBytes: await lstat(join(root, f)).then((st) => (st.isFile() ? st.size : 0), () => 0) })));
  const total = sizes.reduce((n, x) => n + x.sizeBytes, 0);
  if (total <= limit) return;
  const biggest = sizes.filter((x) => x.sizeBytes > 0).sort((a, b) => b.sizeBytes - a.sizeBytes || a.f.localeCompare(b.f)).slice(0, BIGGEST_SHOWN);
  options.warn(
    `warning: untracked files add up to ${formatBytes(total)}, over the ${formatBytes(limit)} limit (local.untrackedWarnBytes in config.yaml), and are captured with every run: ` +
      `${biggest.map((x) => `${x.f} (${formatBytes(x.sizeBytes)})`).join(', ')}. Add them to .gitignore, or save them as an artifact and use them through deps.`,
  );
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

