import { closeSync, constants, fchmodSync, fstatSync, lstatSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { chmod, lstat, mkdir, open, readdir, realpath, rm, rmdir, symlink, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute, join, sep } from 'node:path';
import { setImmediate as yieldTurn } from 'node:timers/promises';
import pLimit from 'p-limit';
import { errnoCode } from '../errors.js';
import type { Store } from '../ports.js';
import { ManifestSchema } from '../records/manifest.js';
import { hashChunk, hashPack } from './hash-pool.js';
import { SYNC_FILES_PER_TURN } from './pack.js';
import { withChunkBuffer } from './chunk-slots.js';
import { ArtifactError, CHUNK_BYTES, blobKey, checkArtifactPath, checkManifest, manifestKey, sha256, type Manifest, type ManifestEntry } from './manifest.js';

/**
 * Reads a manifest by its hash and parses it with ManifestSchema, then checks what the schema cannot
 * say (checkManifest). The Store is not trusted: a misshapen manifest is refused, with one line
 * naming the manifest and the field, before anything is written.
 */
export async function readManifest(store: Store, manifestSha: string): Promise<Manifest> {
  const body = await store.get(manifestKey(manifestSha));
  if (!body) throw new ArtifactError(`artifact manifest ${manifestSha} is missing from the store`);
  if (sha256(body) !== manifestSha) throw new ArtifactError(`artifact manifest ${manifestSha} is corrupt (hash mismatch)`);
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw new ArtifactError(`artifact manifest ${manifestSha} is not JSON`);
  }
  const parsed = ManifestSchema.safeParse(value);
  if (!parsed.success) {
    const problems = parsed.error.issues.slice(0, 3).map((i) => `${i.path.length > 0 ? i.path.join('.') : '(manifest)'}: ${i.message}`);
    throw new ArtifactError(`artifact manifest ${manifestSha} is misshapen: ${oneLine(problems.join('; '))}`);
  }
  checkManifest(parsed.data);
  return parsed.data;
}

function oneLine(s: string): string {
  const line = s.replace(/\s+/g, ' ').trim();
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}

/**
 * Where an artifact whose path came from the store (a run's artifact index, a job spec) is restored:
 * a relative path under `base`, an absolute one at its own path (`absolute: 'at-path'`, the agent) or
 * under `base` (`'under-base'`, a download). A `..` is refused, and so is a relative target that an
 * existing symlink would lead out of `base`. Makes the target's parent.
 */
export async function artifactTarget(base: string, path: string, absolute: 'at-path' | 'under-base'): Promise<string> {
  checkArtifactPath(path);
  if (isAbsolute(path) && absolute === 'at-path') {
    await mkdir(dirname(path), { recursive: true });
    return path;
  }
  const rel = path.replace(/^\/+/, '');
  await mkdir(base, { recursive: true });
  const root = await realpath(base);
  const dest = rel === '' || rel === '.' ? root : join(root, ...rel.split('/').filter((s) => s !== '' && s !== '.'));
  if (dest !== root) await ensureInside(root, dirname(dest), path);
  try {
    // The target itself may be a link (saved as one, restored as one); a link that leads out of base is replaced, not written through.
    if ((await lstat(dest)).isSymbolicLink() && !isInside(root, await realpath(dest).catch(() => '/'))) await rm(dest);
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  return dest;
}

/**
 * A Store that reads an object into the caller's buffer (LocalStore from disk, S3Store on its fetching
 * thread): a restore then reads each chunk into one of the process's chunk buffers rather than a fresh
 * 8 MiB one, and the hashing threads check it there. Returns the object's
 * size (only `buf.length` bytes of a larger one are read), or undefined when it does not exist.
 */
export interface ReadsInto {
  /** `buf` is one of the process's chunk buffers (shared memory); `signal` stops the read (the restore has failed). */
  readInto(key: string, buf: Buffer, signal?: AbortSignal): Promise<number | undefined>;
}

const readsInto = (store: Store): store is Store & ReadsInto => 'readInto' in store && typeof store.readInto === 'function';

/**
 * Chunks fetched, verified or being written at once over a restore: each holds up to CHUNK_BYTES, in
 * one of the process's chunk buffers (a store's `get` hands over buffers of its own).
 */
const CHUNKS_IN_FLIGHT = 6;

/**
 * Restores a saved artifact into `target`. Every entry is checked before anything is written; every
 * chunk is verified against its hash; nothing is written through a symlink that leads outside the
 * target, whether the manifest or the existing tree put it there.
 */
export async function restoreTree(store: Store, manifestSha: string, target: string, onProgress?: (doneBytes: number, totalBytes: number) => void): Promise<Manifest> {
  const manifest = await readManifest(store, manifestSha);
  if (manifest.link !== undefined) {
    await restoreLink(target, manifest.link);
    return manifest;
  }
  await mkdir(target, { recursive: true });
  const root = await realpath(target);
  // Directories first, then files (in parallel: their parents exist), then symlinks, so that no file
  // is ever written through a link made by this restore; directory modes go on last.
  const dirs = manifest.entries.filter((e) => e.type === 'dir');
  const files = manifest.entries.filter((e) => e.type === 'file');
  const links = manifest.entries.filter((e) => e.type === 'symlink');
  const checked = new Set<string>();
  const inside = async (abs: string, path: string): Promise<void> => {
    const dir = dirname(abs);
    if (checked.has(dir)) return;
    await ensureInside(root, dir, path);
    checked.add(dir);
  };
  const at = (path: string): string => join(root, ...path.split('/'));
  for (const e of dirs) {
    await inside(at(e.path), e.path);
    await removeIfLink(at(e.path));
    await mkdir(at(e.path), { recursive: true });
    await ensureInside(root, at(e.path), e.path);
    checked.add(at(e.path));
  }
  let done = 0;
  const limit = pLimit(8);
  const opened = async (e: ManifestEntry): Promise<FileHandle> => {
    const abs = at(e.path);
    await inside(abs, e.path);
    await removeIfLink(abs);
    return open(abs, 'w', 0o600);
  };
  // Packed files: each pack is fetched once, checked, and cut into its files.
  const packs = new Map<string, ManifestEntry[]>();
  for (const e of files) {
    if (!e.pack) continue;
    const members = packs.get(e.pack.sha);
    if (members) members.push(e);
    else packs.set(e.pack.sha, [e]);
  }
  // Every task of the restore has ended when it returns or throws (see `all`): none goes on writing behind its back.
  const halt = new Halt();
  await halt.all(
    [...packs].map(([sha, members]) =>
      limit(() => halt.guard(async () => {
        const got = await store.get(blobKey(sha));
        if (!got) throw new ArtifactError(`\`${members[0]?.path ?? ''}\`: pack ${sha} is missing from the store`);
        // Each member's range is checked to lie inside the pack before anything is hashed.
        const ranges = members.map((e): [number, number] => {
          const offset = e.pack?.offset ?? 0;
          if (offset + e.sizeBytes > got.length) throw new ArtifactError(`\`${e.path}\`: its bytes in pack ${sha} do not match its hash`);
          return [offset, e.sizeBytes];
        });
        const { sha: packSha, parts, data: pack } = await hashPack(got, ranges);
        if (packSha !== sha) throw new ArtifactError(`\`${members[0]?.path ?? ''}\`: pack ${sha} is corrupt (hash mismatch)`);
        for (const [k, e] of members.entries()) {
          const offset = e.pack?.offset ?? 0;
          const data = pack.subarray(offset, offset + e.sizeBytes);
          if (data.length !== e.sizeBytes || parts[k] !== e.sha256) throw new ArtifactError(`\`${e.path}\`: its bytes in pack ${sha} do not match its hash`);
          const abs = at(e.path);
          await inside(abs, e.path);
          writeSmallFile(abs, data, e.mode);
          if (k % SYNC_FILES_PER_TURN === SYNC_FILES_PER_TURN - 1) await yieldTurn();
          done += data.length;
          onProgress?.(done, manifest.sizeBytes);
        }
      })),
    ),
  );
  // Chunked files: their chunks are fetched, verified (on the hashing threads) and written at their offsets in parallel, at most CHUNKS_IN_FLIGHT of them held at once over the whole restore.
  const chunkLimit = pLimit(CHUNKS_IN_FLIGHT);
  await halt.all(
    files.filter((e) => !e.pack).map((e) =>
      limit(() => halt.guard(async () => {
        const chunks = e.chunks ?? [];
        const fh = await opened(e);
        try {
          // Pre-sized, so that the chunks land at their offsets in any order.
          if (e.sizeBytes > 0) await fh.truncate(e.sizeBytes);
          // The file stays open until each of its chunks has ended.
          const sizes = await halt.all(
            chunks.map((chunk, i) =>
              chunkLimit(() => halt.guard(async () => {
                // Verified, then written: a chunk's bytes reach the file only once its hash is right.
                const put = async (sha: string, data: Buffer, size: number): Promise<number> => {
                  if (sha !== chunk) throw new ArtifactError(`\`${e.path}\`: blob ${chunk} is corrupt (hash mismatch)`);
                  // Every chunk but the last is whole (that is how a save cuts a file), so each one's offset is known before it arrives.
                  if (i < chunks.length - 1 && size !== CHUNK_BYTES) throw new ArtifactError(`\`${e.path}\`: blob ${chunk} is not a whole chunk`);
                  await writeAll(fh, data, i * CHUNK_BYTES);
                  done += size;
                  onProgress?.(done, manifest.sizeBytes);
                  return size;
                };
                const missing = (): ArtifactError => new ArtifactError(`\`${e.path}\`: blob ${chunk} is missing from the store`);
                const tooLarge = (): ArtifactError => new ArtifactError(`\`${e.path}\`: blob ${chunk} is corrupt (larger than a chunk)`);
                if (readsInto(store)) {
                  return withChunkBuffer(async (buf) => {
                    const size = await store.readInto(blobKey(chunk), buf, halt.signal);
                    if (size === undefined) throw missing();
                    if (size > buf.length) throw tooLarge();
                    const { sha, data } = await hashChunk(buf.subarray(0, size));
                    return put(sha, data, size);
                  });
                }
                const got = await store.get(blobKey(chunk));
                if (!got) throw missing();
                const { sha, data } = await hashChunk(got);
                return put(sha, data, data.length);
              })),
            ),
          );
          // A file that shrank while it was saved has fewer bytes than its entry says: it is what its chunks hold.
          const total = sizes.reduce((a, b) => a + b, 0);
          if (total !== e.sizeBytes) await fh.truncate(total);
          await fh.chmod(e.mode);
        } finally {
          await fh.close();
        }
      })),
    ),
  );
  for (const e of links) {
    await inside(at(e.path), e.path);
    await rm(at(e.path), { force: true, recursive: true });
    await symlink(e.target ?? '', at(e.path));
  }
  for (const e of [...dirs].reverse()) await chmod(at(e.path), e.mode);
  return manifest;
}

/**
 * The tasks of one restore: after the first failure no new one starts, and the restore ends, with that
 * failure, only once every task already started has ended.
 */
class Halt {
  private failure: { error: unknown } | undefined;
  private readonly aborts = new AbortController();
  /** Aborted at the first failure: reads still under way stop rather than run out their retries. */
  readonly signal = this.aborts.signal;

  /** Runs `task`, unless a task has failed already; a failure stops the tasks not yet started. */
  async guard<T>(task: () => Promise<T>): Promise<T> {
    if (this.failure) throw this.failure.error;
    try {
      return await task();
    } catch (e) {
      if (!this.failure) {
        this.failure = { error: e };
        this.aborts.abort();
      }
      throw e;
    }
  }

  /** The results of `tasks` once all have settled; the restore's first failure if there was one. */
  async all<T>(tasks: Array<Promise<T>>): Promise<T[]> {
    const settled = await Promise.allSettled(tasks);
    if (this.failure) throw this.failure.error;
    return settled.map((r) => {
      if (r.status === 'rejected') throw r.reason;
      return r.value;
    });
  }
}

/** Puts back an artifact that was a symlink, as that symlink; an existing link or empty dir at `target` gives way. */
async function restoreLink(target: string, link: string): Promise<void> {
  await mkdir(dirname(target), { recursive: true });
  try {
    const st = await lstat(target);
    if (st.isSymbolicLink()) await rm(target);
    else if (st.isDirectory() && (await readdir(target)).length === 0) await rmdir(target);
    else throw new ArtifactError(`refusing to restore the link \`${target}\` -> \`${link}\`: something else is already there`);
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  await symlink(link, target);
}

const isInside = (root: string, p: string): boolean => p === root || p.startsWith(root + sep);

/**
 * Makes `dir` (and its parents) only after checking that its nearest existing ancestor, links
 * followed, is inside `root`; then checks `dir` itself. ArtifactError if either leads out. Also what
 * the agent's code rebuild makes a link's parent with (agent/workspace.ts).
 */
export async function ensureInside(root: string, dir: string, path: string): Promise<void> {
  const inside = (p: string): boolean => isInside(root, p);
  let existing = dir;
  let real: string | undefined;
  while (real === undefined) {
    try {
      real = await realpath(existing);
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT' || dirname(existing) === existing) throw e;
      existing = dirname(existing);
    }
  }
  if (!inside(real)) throw new ArtifactError(`refusing to restore \`${path}\`: it would be written outside the target, through a symlink`);
  if (existing !== dir) {
    await mkdir(dir, { recursive: true });
    if (!inside(await realpath(dir))) throw new ArtifactError(`refusing to restore \`${path}\`: it would be written outside the target`);
  }
}

/**
 * Writes a small file synchronously: for thousands of them, five thread-pool round trips each (lstat,
 * open, write, chmod, close) cost more than they block. O_NOFOLLOW refuses to write through a link
 * at the file's own name; such a link is removed and the file made in its place.
 */
function writeSmallFile(abs: string, data: Buffer, mode: number): void {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
  let fd: number;
  // Made with its mode, so that a chmod (a second metadata write, which a busy journal makes costly)
  // is needed only where the umask took bits away or the file was already there.
  try {
    fd = openSync(abs, flags, mode);
  } catch (e) {
    if (errnoCode(e) !== 'ELOOP' || !lstatSync(abs).isSymbolicLink()) throw e;
    unlinkSync(abs);
    fd = openSync(abs, flags, mode);
  }
  try {
    for (let off = 0; off < data.length; ) off += writeSync(fd, data, off, data.length - off);
    if ((fstatSync(fd).mode & 0o7777) !== mode) fchmodSync(fd, mode);
  } finally {
    closeSync(fd);
  }
}

/** Writes all of `data` at `position` (a positional write may write less than asked). */
async function writeAll(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  for (let off = 0; off < data.length; ) {
    const { bytesWritten } = await fh.write(data, off, data.length - off, position + off);
    if (bytesWritten === 0) throw new ArtifactError('a write to the restored file wrote nothing');
    off += bytesWritten;
  }
}

async function removeIfLink(path: string): Promise<void> {
  try {
    if ((await lstat(path)).isSymbolicLink()) await rm(path);
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
}
