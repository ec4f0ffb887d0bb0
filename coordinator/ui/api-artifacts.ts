import { mkdtemp, rm } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import { ArtifactError, blobKey, sha256, type Manifest, type ManifestEntry } from '../../common/artifacts/manifest.js';
import { readManifest, restoreTree } from '../../common/artifacts/restore.js';
import type { Store } from '../../common/ports.js';
import { ArtifactIndexSchema } from '../../common/records/runs.js';
import { readJson, runKeys, type SavedArtifactRef } from '../../common/runs.js';
import { HttpError } from './http.js';

/**
 * A path inside an artifact, as a download URL gives it: relative, `/`-separated, with no `..`,
 * no empty or `.` segment, no backslash and no NUL. The URL is the browser's, so it is checked
 * before anything is looked up. `''` (the whole artifact) only where `allowRoot`.
 */
export function checkDownloadPath(path: string, allowRoot: boolean): string {
  if (path === '' && allowRoot) return path;
  const ok = path.length > 0 && !path.includes('\0') && !path.includes('\\') && !path.startsWith('/') && path.split('/').every((s) => s !== '' && s !== '.' && s !== '..');
  if (!ok) throw new HttpError(400, `refusing the path \`${path.replace(/\0/g, '\\0')}\`: it must be relative and stay inside the artifact (no .., no absolute path)`);
  return path;
}

/** The run's artifact #index, from its artifacts index alone: one GET, not the whole run (attempts listing and all). */
async function artifactOf(store: Store, repoId: string, runName: string, index: number): Promise<SavedArtifactRef> {
  const saved = await readJson(store, runKeys.artifacts(repoId, runName), ArtifactIndexSchema);
  const a = saved?.artifacts[index];
  if (!a) throw new HttpError(404, `run ${runName} has no artifact #${index}`);
  return a;
}

/** `GET /api/runs/:run/artifacts/:index/tree`: the artifact's entries from its manifest (a link artifact has none). */
export async function treeApi(store: Store, repoId: string, runName: string, index: number): Promise<{ path: string; entries: Array<{ path: string; type: string; sizeBytes: number }> }> {
  const a = await artifactOf(store, repoId, runName, index);
  const m = await readManifest(store, a.manifestSha);
  return { path: a.path, entries: m.entries.map((e) => ({ path: e.path, type: e.type, sizeBytes: e.type === 'file' ? e.sizeBytes : 0 })) };
}

/**
 * `GET /api/runs/:run/artifacts/:index/download?path=P[&tar=1]`: one file's bytes, each pack or chunk
 * checked against its hash before it is sent; or a folder (`tar=1`) as a streamed tar.gz, restored
 * (and so checked) into a temp folder first.
 */
export async function downloadApi(store: Store, repoId: string, runName: string, index: number, query: URLSearchParams, res: ServerResponse): Promise<void> {
  const asTar = query.get('tar') === '1';
  const path = checkDownloadPath(query.get('path') ?? '', asTar);
  const a = await artifactOf(store, repoId, runName, index);
  const m = await readManifest(store, a.manifestSha);
  if (asTar) return sendTar(store, a, m, path, res);
  const entry = m.entries.find((e) => e.path === path);
  if (!entry || entry.type !== 'file') throw new HttpError(404, `artifact ${a.path} has no file \`${path}\``);
  // The first piece is fetched and checked before the headers go: a missing or corrupt one is a clean error.
  const pieces = filePieces(store, entry);
  const first = await pieces.next();
  res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'x-content-type-options': 'nosniff',
    'content-length': entry.sizeBytes,
    'content-disposition': `attachment; filename*=UTF-8''${encodeURIComponent(basename(path))}`,
    'cache-control': 'no-store',
  });
  if (!first.done) await write(res, first.value);
  for await (const piece of pieces) await write(res, piece);
  res.end();
}

/** A file's bytes piece by piece, each verified: its slice of a pack, or its chunks in order. */
async function* filePieces(store: Store, e: ManifestEntry): AsyncGenerator<Buffer> {
  if (e.pack) {
    const pack = await store.get(blobKey(e.pack.sha));
    if (!pack || sha256(pack) !== e.pack.sha) throw new ArtifactError(`\`${e.path}\`: pack ${e.pack.sha} is missing or corrupt`);
    const data = pack.subarray(e.pack.offset, e.pack.offset + e.sizeBytes);
    if (data.length !== e.sizeBytes || sha256(data) !== e.sha256) throw new ArtifactError(`\`${e.path}\`: its bytes in pack ${e.pack.sha} do not match its hash`);
    yield data;
    return;
  }
  for (const chunk of e.chunks ?? []) {
    const data = await store.get(blobKey(chunk));
    // The headers may be gone already: a failure here ends the response short, which the browser reports.
    if (!data || sha256(data) !== chunk) throw new ArtifactError(`\`${e.path}\`: blob ${chunk} is missing or corrupt`);
    yield data;
  }
}

async function write(res: ServerResponse, data: Buffer): Promise<void> {
  if (!res.write(data)) await new Promise<void>((resolve, reject) => {
    res.once('drain', resolve);
    res.once('close', () => reject(new Error('the browser closed the download')));
  });
}

async function sendTar(store: Store, a: SavedArtifactRef, m: Manifest, path: string, res: ServerResponse): Promise<void> {
  if (path !== '' && !m.entries.some((e) => e.path === path && e.type === 'dir')) throw new HttpError(404, `artifact ${a.path} has no folder \`${path}\``);
  const dir = await mkdtemp(join(tmpdir(), 'dstack-ui-'));
  try {
    await restoreTree(store, a.manifestSha, join(dir, 'a'));
    const name = `${basename(path === '' ? a.path : path) || 'artifact'}.tar.gz`;
    res.writeHead(200, { 'content-type': 'application/gzip', 'content-disposition': `attachment; filename*=UTF-8''${encodeURIComponent(name)}`, 'cache-control': 'no-store' });
    await pipeline(tar.create({ cwd: join(dir, 'a'), gzip: true, portable: true }, [path === '' ? '.' : path]), res);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
