import { join } from 'node:path';
import { setImmediate as yieldTurn } from 'node:timers/promises';
import type { HashCache } from './save.js';
import { insideReaderSync } from './open-inside.js';
import { hashChunk } from './hash-pool.js';
import { CHUNK_BYTES, sha256, type ManifestEntry } from './manifest.js';

/** Small files read or written synchronously between two turns of the event loop. */
export const SYNC_FILES_PER_TURN = 256;

/** Packs being uploaded at once; each holds at most about CHUNK_BYTES in memory. */
const PACKS_IN_FLIGHT = 3;

/**
 * Saves small files packed: in path order, batches of up to CHUNK_BYTES are read, concatenated and stored as one content-addressed blob each; every entry gets
 * its pack's sha256 and its offset. Equal contents within a save share one copy. Files the hash
 * cache knows unchanged keep their earlier pack reference and are not read. The packing is
 * deterministic, so re-saving an unchanged tree in a new job produces the same packs (and uploads
 * nothing).
 */
export async function savePacked(
  root: string,
  entries: ManifestEntry[],
  stamps: Map<ManifestEntry, string>,
  cache: HashCache,
  storeBlob: (sha: string, data: Buffer) => Promise<void>,
  onFile: (e: ManifestEntry) => void,
): Promise<void> {
  const misses: ManifestEntry[] = [];
  for (const e of entries) {
    const hit = cache.lookup(join(root, e.path), stamps.get(e) ?? '');
    if (hit?.pack && hit.sha256 && cache.isStored(hit.pack.sha)) {
      e.pack = hit.pack;
      e.sha256 = hit.sha256;
      onFile(e);
    } else misses.push(e);
  }
  // Nothing to read: the artifact may have no folder at all (a missing path is an empty artifact).
  if (misses.length === 0) return;
  const readFile = await insideReaderSync(root);
  const uploads = new Set<Promise<void>>();
  const byContent = new Map<string, { sha: string; offset: number }>();
  for (let i = 0; i < misses.length; ) {
    let j = i;
    let bytes = 0;
    while (j < misses.length && (j === i || bytes + (misses[j]?.sizeBytes ?? 0) <= CHUNK_BYTES)) bytes += misses[j++]?.sizeBytes ?? 0;
    const batch = misses.slice(i, j);
    i = j;
    // Read synchronously: a batch of small files costs less blocking than thread-pool round trips.
    // A batch may hold many thousands of empty files, so the event loop (heartbeats) gets a turn now and then.
    const contents: Buffer[] = [];
    for (const e of batch) {
      contents.push(readFile(e.path));
      if (contents.length % SYNC_FILES_PER_TURN === 0) await yieldTurn();
    }
    const parts: Buffer[] = [];
    const fresh: Array<{ sha: string; offset: number }> = [];
    let offset = 0;
    batch.forEach((e, k) => {
      const data = contents[k] ?? Buffer.alloc(0);
      e.sizeBytes = data.length;
      e.sha256 = sha256(data);
      let ref = byContent.get(e.sha256);
      if (!ref) {
        // The pack's hash is known once the batch is whole; the reference is filled in below.
        ref = { sha: '', offset };
        fresh.push(ref);
        byContent.set(e.sha256, ref);
        parts.push(data);
        offset += data.length;
      }
      e.pack = ref;
    });
    // The pack hashes on a hashing thread while the next batch is read.
    const upload: Promise<void> = hashChunk(Buffer.concat(parts)).then(async ({ sha: packSha, data: pack }) => {
      for (const ref of fresh) ref.sha = packSha;
      await storeBlob(packSha, pack);
      for (const e of batch) {
        if (e.pack && e.sha256) cache.remember(join(root, e.path), stamps.get(e) ?? '', { pack: e.pack, sha256: e.sha256 });
        onFile(e);
      }
    });
    const tracked: Promise<void> = upload.finally(() => uploads.delete(tracked));
    tracked.catch(() => undefined);
    uploads.add(tracked);
    if (uploads.size >= PACKS_IN_FLIGHT) await Promise.race(uploads);
  }
  await Promise.all(uploads);
}
