import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import type { CodeRef } from '../common/code-ref.js';
import { JobFailedError } from '../common/errors.js';
import { exec } from '../common/exec.js';
import type { Store } from '../common/ports.js';

/**
 * Rebuilds the submitter's working tree in `dir`: the HEAD archive, then the diff of tracked files,
 * then the untracked files. Everything comes from the Store; no git credentials are needed.
 */
export async function rebuildCode(store: Store, code: CodeRef, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  if (code.archiveKey) {
    await pipeline(await store.getStream(code.archiveKey), tar.extract({ cwd: dir, strict: true }));
  }
  if (code.diffKey) {
    const patch = await store.get(code.diffKey);
    if (!patch) throw new JobFailedError(`the run's code diff (${code.diffKey}) is missing from the store`);
    const patchFile = join(dir, '..', `${code.diffSha256 ?? 'code'}.patch`);
    await writeFile(patchFile, patch);
    // GIT_CEILING_DIRECTORIES keeps git apply from treating an enclosing repo as the target.
    const r = await exec('git', ['apply', '--binary', '--whitespace=nowarn', patchFile], {
      cwd: dir,
      extraEnv: { GIT_CEILING_DIRECTORIES: join(dir, '..') },
    });
    if (r.code !== 0) throw new JobFailedError(`could not apply the run's uncommitted changes: ${r.stderr.trim().split('\n')[0] ?? ''}`);
  }
  if (code.untrackedKey) {
    await pipeline(await store.getStream(code.untrackedKey), tar.extract({ cwd: dir, strict: true }));
  }
}
