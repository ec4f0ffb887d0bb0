import { z } from 'zod';

/**
 * An artifact's manifest as it comes back from the Store, which is not trusted: parsed with this
 * schema on every read (common/artifacts/restore.ts `readManifest`), then checked for what a schema
 * cannot say (paths that stay inside, nothing below a link) by `checkManifest`. Every manifest that
 * `encodeManifest` writes, now or in earlier versions, fits; unknown fields are dropped.
 */

const Sha256Schema = z.string().regex(/^[0-9a-f]{64}$/, 'expected a sha256 (64 lowercase hex digits)');
const CountSchema = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/** A link target as the link holds it: any non-empty string without a NUL. */
const LinkTargetSchema = z.string().min(1).refine((t) => !t.includes('\0'), 'a link target cannot hold a NUL');

/** One path inside a saved artifact. */
export const ManifestEntrySchema = z.object({
  /** Relative to the artifact's root, `/`-separated (checked by checkManifest). */
  path: z.string(),
  type: z.enum(['file', 'dir', 'symlink']),
  /** Permission bits, e.g. 0o755 (saves keep `st.mode & 0o777`). */
  mode: z.number().int().min(0).max(0o777),
  sizeBytes: CountSchema,
  /** sha256 of each chunk, in order (files stored on their own). */
  chunks: z.array(Sha256Schema).optional(),
  /** Where a packed small file lies: the pack blob's sha256 and the byte offset in it (its length is sizeBytes). */
  pack: z.object({ sha: Sha256Schema, offset: CountSchema }).optional(),
  /** sha256 of the file when it is one chunk; of the chunk hashes joined, otherwise. */
  sha256: Sha256Schema.optional(),
  /**
   * Link target (symlinks only), as the link holds it: relative or absolute, inside the artifact or
   * not (a venv's `bin/python` names the system interpreter). A link is restored as a link; nothing
   * is ever read or written through one.
   */
  target: LinkTargetSchema.optional(),
});
export type ManifestEntry = z.infer<typeof ManifestEntrySchema>;

/** A saved artifact: every entry, sorted by path. Stored content-addressed as `manifests/<sha256>.json`. */
export const ManifestSchema = z.object({
  version: z.literal(1),
  entries: z.array(ManifestEntrySchema),
  files: CountSchema,
  sizeBytes: CountSchema,
  /** Set when the artifact's path was itself a symlink: its target, saved as a link (entries is then empty). */
  link: LinkTargetSchema.optional(),
});
export type Manifest = z.infer<typeof ManifestSchema>;
