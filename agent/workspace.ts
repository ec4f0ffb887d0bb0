import { createWriteStream, type Stats } from 'node:fs';
import { mkdir, realpath, symlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import { ArtifactError } from '../common/artifacts/manifest.js';
import { ensureInside } from '../common/artifacts/restore.js';
import type { CodeRef } from '../common/code-ref.js';
import { JobFailedError, NotFoundError, errnoCode } from '../common/errors.js';
import { exec } from '../common/exec.js';
import type { Store } from '../common/ports.js';

/**
 * Rebuilds the submitter's working tree in `dir`: the HEAD archive, then the diff of tracked files,
 * then the untracked files. Everything comes from the Store; no git credentials are needed.
 */
export async function rebuildCode(store: Store, code: CodeRef, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  if (code.archiveKey) {
    await extractCode(await store.getStream(code.archiveKey), dir);
  }
  if (code.diffKey) {
    // Streamed to a file, not read whole; named here, not after the spec's hash (a string from the queue).
    const patchFile = join(dir, '..', 'code.patch');
    const body = await store.getStream(code.diffKey).catch((e: unknown) => {
      if (e instanceof NotFoundError) throw new JobFailedError(`the run's code diff (${code.diffKey}) is missing from the store`);
      throw e;
    });
    await pipeline(body, createWriteStream(patchFile));
    // GIT_CEILING_DIRECTORIES keeps git apply from treating an enclosing repo as the target.
    const r = await exec('git', ['apply', '--binary', '--whitespace=nowarn', patchFile], {
      cwd: dir,
      extraEnv: { GIT_CEILING_DIRECTORIES: join(dir, '..') },
    });
    if (r.code !== 0) throw new JobFailedError(`could not apply the run's uncommitted changes: ${r.stderr.trim().split('\n')[0] ?? ''}`);
  }
  if (code.untrackedKey) {
    await extractCode(await store.getStream(code.untrackedKey), dir);
  }
}

/**
 * Extracts a code tar into `dir`. Files and dirs go through tar, which refuses `..` and absolute
 * names and never writes through a link. Symlinks are made afterwards, as they are: git lets a
 * committed link lead anywhere (tar would refuse one that leads out, or strip its leading `/`).
 */
async function extractCode(body: Readable, dir: string): Promise<void> {
  const links: Array<{ path: string; target: string }> = [];
  const filter = (path: string, entry: tar.ReadEntry | Stats): boolean => {
    if (!(entry instanceof tar.ReadEntry) || entry.type !== 'SymbolicLink') return true;
    links.push({ path, target: entry.linkpath ?? '' });
    return false;
  };
  await pipeline(body, tar.extract({ cwd: dir, strict: true, filter }));
  const root = await realpath(dir);
  for (const link of links) {
    const rel = link.path.replace(/\/+$/, '');
    const bad = (why: string): never => {
      throw new JobFailedError(`the run's code has a symlink \`${link.path}\` that cannot be rebuilt: ${why}`);
    };
    if (rel === '' || rel.startsWith('/') || rel.split('/').some((s) => s === '..' || s === '.' || s === '')) bad('its name climbs out of the repo');
    if (link.target === '' || link.target.includes('\0')) bad('it has no target');
    const abs = join(root, ...rel.split('/'));
    // Checked before any folder is made: mkdir -p through a link made just before would make them outside.
    await ensureInside(root, dirname(abs), link.path).catch((e: unknown) => {
      if (e instanceof ArtifactError) bad('it would be made through another link that leads out of the repo');
      throw e;
    });
    await symlink(link.target, abs).catch((e: unknown) => {
      if (errnoCode(e) === 'EEXIST') bad('another entry of the tree is already at its path');
      throw e;
    });
  }
}
