import { sha256 } from '../hash.js';
import { DstackError } from '../errors.js';
import type { Manifest } from '../records/manifest.js';

/** Files larger than this are stored as several blobs, one per chunk. */
export const CHUNK_BYTES = 8 * 1024 * 1024;

/**
 * Files up to this size are packed: concatenated, in path order, into shared blobs of about
 * CHUNK_BYTES, so that 10,000 small files cost a dozen requests rather than 10,000.
 */
export const PACK_FILE_MAX_BYTES = 256 * 1024;

/** The manifest's shape is its schema (common/records/manifest.ts); these are the same types. */
export type { Manifest, ManifestEntry } from '../records/manifest.js';

/** A restore refused something that would write outside its target, or found corrupt data. */
export class ArtifactError extends DstackError {
  constructor(message: string) {
    super('INTERNAL', message);
    this.name = 'ArtifactError';
  }
}

export const blobKey = (sha: string): string => `blobs/sha256/${sha.slice(0, 2)}/${sha}`;
export const manifestKey = (sha: string): string => `manifests/${sha}.json`;

export { sha256 };

export function fileHash(chunks: string[]): string {
  return chunks.length === 1 ? (chunks[0] ?? '') : sha256(chunks.join('\n'));
}

/** The canonical bytes of a manifest (so that equal content has an equal hash). */
export function encodeManifest(m: Manifest): string {
  // Fields in one fixed order, however the entries were filled in.
  const entries = m.entries.map((e) => ({
    path: e.path,
    type: e.type,
    mode: e.mode,
    sizeBytes: e.sizeBytes,
    ...(e.chunks ? { chunks: e.chunks } : {}),
    ...(e.pack ? { pack: { sha: e.pack.sha, offset: e.pack.offset } } : {}),
    ...(e.sha256 !== undefined ? { sha256: e.sha256 } : {}),
    ...(e.target !== undefined ? { target: e.target } : {}),
  }));
  return JSON.stringify({ version: m.version, entries, files: m.files, sizeBytes: m.sizeBytes, ...(m.link !== undefined ? { link: m.link } : {}) });
}

/**
 * What the schema cannot say, checked on a parsed manifest before anything is written: no absolute
 * paths, no `..`, no empty segments, a target on every symlink, a top-level link only with no
 * entries, a hash on every packed file, and no entry below a symlink entry (which would be written
 * through the link). Types, modes, sizes, offsets and hashes are the schema's (ManifestSchema).
 */
export function checkManifest(m: Manifest): void {
  if (m.link !== undefined && m.entries.length > 0) throw new ArtifactError('not an artifact manifest: a bad link');
  const links = new Set<string>();
  for (const e of m.entries) {
    if (!safeRelative(e.path)) {
      throw new ArtifactError(`refusing to restore \`${e.path}\`: paths must stay inside the target (no absolute paths or ..)`);
    }
    if (e.type === 'file' && e.pack !== undefined && e.sha256 === undefined) {
      throw new ArtifactError(`refusing to restore \`${e.path}\`: bad pack reference`);
    }
    if (e.type === 'symlink') {
      if (e.target === undefined) throw new ArtifactError(`refusing to restore symlink \`${e.path}\`: bad target`);
      links.add(e.path);
    }
  }
  for (const e of m.entries) {
    const segments = e.path.split('/');
    for (let i = 1; i < segments.length; i++) {
      const above = segments.slice(0, i).join('/');
      if (links.has(above)) throw new ArtifactError(`refusing to restore \`${e.path}\`: it would be written through the symlink \`${above}\``);
    }
  }
}

function safeRelative(p: string): boolean {
  if (p.length === 0 || p.includes('\0') || p.startsWith('/') || p.includes('\\')) return false;
  return p.split('/').every((s) => s !== '' && s !== '.' && s !== '..');
}

/**
 * An artifact's own path, as a run record or job spec from the store gives it: relative (under the
 * working dir, or under `-o` on download) or absolute, but never with a `..` segment.
 */
export function checkArtifactPath(path: unknown): string {
  const ok = typeof path === 'string' && path.length > 0 && !path.includes('\0') && path.split('/').every((s) => s !== '..');
  if (!ok) throw new ArtifactError(`refusing artifact path \`${String(path)}\`: it climbs out of its folder (..)`);
  return path;
}
