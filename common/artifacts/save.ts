import { lstatSync } from 'node:fs';
import { lstat, readdir, readlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { ConflictError, errnoCode } from '../errors.js';
import type { Store } from '../ports.js';
import { CHUNK_BYTES, PACK_FILE_MAX_BYTES, blobKey, encodeManifest, fileHash, manifestKey, sha256, type Manifest, type ManifestEntry } from './manifest.js';
import { savePacked } from './pack.js';
import { insideOpener, type OpenInside } from './open-inside.js';
import { hashChunk } from './hash-pool.js';
import { acquireChunkBuffer, releaseChunkBuffer } from './chunk-slots.js';

/** Below this size a blob is written with one conditional PUT rather than a HEAD and a PUT. */
const SMALL_BLOB_BYTES = 1024 * 1024;

/** How a saved file's content is found again: its own chunks, or a place in a pack. */
export interface FileRef {
  chunks?: string[];
  pack?: { sha: string; offset: number };
  sha256?: string;
}

/**
 * Remembers, per file, where its last save put it (keyed by path, size, mtime and inode), and which
 * blobs the store already has, so that saving an unchanged tree reads no file again.
 */
export class HashCache {
  private readonly files = new Map<string, { stamp: string; ref: FileRef }>();
  private readonly stored = new Set<string>();

  lookup(path: string, stamp: string): FileRef | undefined {
    const hit = this.files.get(path);
    return hit && hit.stamp === stamp ? hit.ref : undefined;
  }

  remember(path: string, stamp: string, ref: FileRef): void {
    this.files.set(path, { stamp, ref });
  }

  /**
   * Whether this cache stored or touched the blob. A cache lives for one job's saves (or one
   * command), during which the collector keeps every blob (a running attempt) or the blob is fresh.
   */
  isStored(sha: string): boolean {
    return this.stored.has(sha);
  }

  markStored(sha: string): void {
    this.stored.add(sha);
  }
}

export interface SaveOptions {
  cache?: HashCache;
  /** Files hashed and uploaded at once. */
  concurrency?: number;
  onProgress?: (doneBytes: number) => void;
}

export interface SavedArtifact {
  manifestSha: string;
  files: number;
  sizeBytes: number;
  /** Bytes of new blobs written (0 when nothing changed). */
  uploadedBytes: number;
}

/**
 * Saves a directory content-addressed: small files packed into shared blobs (see savePacked), larger
 * ones as their own 8 MiB chunks, each blob once by its sha256; then the manifest. The manifest goes last, so a reader never sees an artifact whose blobs are missing.
 * Files are streamed a chunk at a time, never read whole.
 */
export async function saveTree(store: Store, root: string, options: SaveOptions = {}): Promise<SavedArtifact> {
  // An artifact path that is itself a symlink is saved as that link: never read through.
  const isLink = await lstat(root).then((st) => st.isSymbolicLink(), (e: unknown) => {
    if (errnoCode(e) === 'ENOENT') return false;
    throw e;
  });
  if (isLink) return putManifest(store, { version: 1, entries: [], files: 0, sizeBytes: 0, link: await readlink(root) }, 0);
  const cache = options.cache ?? new HashCache();
  const entries: ManifestEntry[] = [];
  const stamps = new Map<ManifestEntry, string>();
  await walk(root, '', entries, stamps);
  const limit = pLimit(options.concurrency ?? 8);
  let uploadedBytes = 0;
  let doneBytes = 0;
  // Files with equal content are saved in parallel: the first upload of a chunk serves them all.
  const inFlight = new Map<string, Promise<void>>();
  const storeChunk = (sha: string, data: Buffer): Promise<void> => {
    if (cache.isStored(sha)) return Promise.resolve();
    let pending = inFlight.get(sha);
    if (!pending) {
      pending = (async () => {
        // Small blobs: one conditional PUT (a conflict means the store has it). Large ones: touch first,
        // so that an existing chunk is not sent again. A blob already there is touched, not skipped:
        // the collector removes only blobs it finds unreferenced and unmodified for its whole grace
        // (common/gc.ts), and this save's manifest, which will reference it, is written only at the
        // end. A touch that finds it gone (removed meanwhile) uploads it again.
        let stored = false;
        if (data.length < SMALL_BLOB_BYTES) {
          try {
            await store.put(blobKey(sha), data, { ifAbsent: true });
            uploadedBytes += data.length;
            stored = true;
          } catch (e) {
            if (!(e instanceof ConflictError)) throw e;
          }
        }
        if (!stored && !(await store.touch(blobKey(sha)))) {
          await store.put(blobKey(sha), data);
          uploadedBytes += data.length;
        }
        cache.markStored(sha);
      })();
      inFlight.set(sha, pending);
    }
    return pending;
  };
  const onFile = (e: ManifestEntry): void => {
    doneBytes += e.sizeBytes;
    options.onProgress?.(doneBytes);
  };
  const all = entries.filter((e) => e.type === 'file');
  const openFile = insideOpener(root);
  await savePacked(root, all.filter((e) => e.sizeBytes <= PACK_FILE_MAX_BYTES), stamps, cache, storeChunk, onFile);
  await Promise.all(
    all
      .filter((e) => e.sizeBytes > PACK_FILE_MAX_BYTES)
      .map((e) =>
        limit(async () => {
          const abs = join(root, e.path);
          const stamp = stamps.get(e) ?? '';
          let chunks = cache.lookup(abs, stamp)?.chunks;
          if (!chunks || !chunks.every((c) => cache.isStored(c))) {
            chunks = await hashAndStore(openFile, e.path, e.sizeBytes, storeChunk);
            cache.remember(abs, stamp, { chunks });
          }
          e.chunks = chunks;
          e.sha256 = fileHash(chunks);
          onFile(e);
        }),
      ),
  );
  const files = entries.filter((e) => e.type === 'file');
  const manifest: Manifest = { version: 1, entries, files: files.length, sizeBytes: files.reduce((n, e) => n + e.sizeBytes, 0) };
  return putManifest(store, manifest, uploadedBytes);
}

/** Stores a manifest by its hash, after its blobs, so that a reader never sees an artifact whose blobs are missing. */
async function putManifest(store: Store, manifest: Manifest, uploadedBytes: number): Promise<SavedArtifact> {
  const body = encodeManifest(manifest);
  const manifestSha = sha256(body);
  // An equal manifest already stored is touched, like a reused blob, until this save's index references it.
  if (!(await store.touch(manifestKey(manifestSha)))) await store.put(manifestKey(manifestSha), body);
  return { manifestSha, files: manifest.files, sizeBytes: manifest.sizeBytes, uploadedBytes };
}

/** Chunks of one file read, hashed or being stored at once: each holds up to CHUNK_BYTES of memory. */
const CHUNKS_IN_FLIGHT = 4;

/**
 * Reads a file a chunk at a time while earlier chunks hash (on the hashing threads, in parallel) and
 * are stored, with at most CHUNKS_IN_FLIGHT chunks held at once.
 */
async function hashAndStore(openFile: OpenInside, rel: string, size: number, storeChunk: (sha: string, data: Buffer) => Promise<void>): Promise<string[]> {
  const shas: Array<Promise<string>> = [];
  const inFlight = new Set<Promise<unknown>>();
  let fh: FileHandle | undefined;
  try {
    fh = await openFile(rel);
    if (size === 0) {
      const sha = sha256(Buffer.alloc(0));
      await storeChunk(sha, Buffer.alloc(0));
      return [sha];
    }
    for (let offset = 0; offset < size; ) {
      // Each chunk is read into one of the process's chunk buffers, held until the chunk is stored;
      // chunks in flight always finish and give theirs back, so waiting for one cannot deadlock.
      const buf = await acquireChunkBuffer();
      let bytesRead: number;
      try {
        bytesRead = (await fh.read(buf, 0, Math.min(CHUNK_BYTES, size - offset), offset)).bytesRead;
      } catch (e) {
        releaseChunkBuffer(buf);
        throw e;
      }
      if (bytesRead === 0) {
        releaseChunkBuffer(buf);
        break;
      }
      offset += bytesRead;
      const sha = hashChunk(buf.subarray(0, bytesRead))
        .then(async (h) => {
          await storeChunk(h.sha, h.data);
          return h.sha;
        })
        .finally(() => releaseChunkBuffer(buf));
      shas.push(sha);
      const p: Promise<unknown> = sha.finally(() => inFlight.delete(p));
      // Marked handled here; the failure still surfaces through the race or the final Promise.all.
      p.catch(() => undefined);
      inFlight.add(p);
      if (inFlight.size >= CHUNKS_IN_FLIGHT) await Promise.race(inFlight);
    }
    return await Promise.all(shas);
  } finally {
    await Promise.allSettled(inFlight);
    await fh?.close();
  }
}

/**
 * Lists a tree in sorted order, with each file's stamp (size, mtime, inode) for the hash cache; a
 * missing root is an empty artifact. Stats are synchronous: thousands of small async stats cost
 * more in thread-pool round trips than they block.
 */
async function walk(root: string, rel: string, out: ManifestEntry[], stamps: Map<ManifestEntry, string>): Promise<void> {
  let names: string[];
  try {
    names = (await readdir(rel ? join(root, rel) : root)).sort();
  } catch (e) {
    if (rel === '' && (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR')) return;
    throw e;
  }
  for (const name of names) {
    const path = rel ? `${rel}/${name}` : name;
    const st = lstatSync(join(root, path));
    const mode = st.mode & 0o777;
    if (st.isDirectory()) {
      out.push({ path, type: 'dir', mode, sizeBytes: 0 });
      await walk(root, path, out, stamps);
    } else if (st.isSymbolicLink()) {
      out.push({ path, type: 'symlink', mode, sizeBytes: 0, target: await readlink(join(root, path)) });
    } else if (st.isFile()) {
      const entry: ManifestEntry = { path, type: 'file', mode, sizeBytes: st.size };
      stamps.set(entry, `${st.size}:${st.mtimeMs}:${st.ino}`);
      out.push(entry);
    }
  }
}
