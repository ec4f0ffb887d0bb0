import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConflictError, UsageError, errnoCode } from '../errors.js';
import { sha256 } from '../hash.js';
import { checkSecretName, type SecretScope, type SecretStore } from '../secrets.js';
import { RUN_NAME_PATTERN } from '../names.js';

/**
 * Secrets as files: `<root>/<sha256 of repoId>/NAME` and `<root>/<sha256 of repoId>/runs/<run>/NAME`,
 * folders 0700 and files 0600, so only the user who runs the CLI and the local agents reads them.
 */
export class LocalSecretStore implements SecretStore {
  constructor(private readonly root: string) {}

  private dir(scope: SecretScope): string {
    const repoDir = join(this.root, sha256(scope.repoId));
    if (scope.runName === undefined) return repoDir;
    // A run name is a path segment here: only the shape run names have.
    if (!RUN_NAME_PATTERN.test(scope.runName)) throw new UsageError(`not a run name: \`${scope.runName}\``);
    return join(repoDir, 'runs', scope.runName);
  }

  async get(scope: SecretScope, name: string): Promise<string | undefined> {
    checkSecretName(name);
    try {
      return await readFile(join(this.dir(scope), name), 'utf8');
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return undefined;
      throw e;
    }
  }

  async put(scope: SecretScope, name: string, value: string, o: { ifAbsent?: boolean } = {}): Promise<void> {
    checkSecretName(name);
    const dir = this.dir(scope);
    await mkdirPrivate(this.root, dir);
    const tmp = join(dir, `.${name}.${randomBytes(4).toString('hex')}.tmp`);
    await writeFile(tmp, value, { mode: 0o600, flag: 'wx' });
    try {
      if (o.ifAbsent && (await this.get(scope, name)) !== undefined) throw new ConflictError(`secret \`${name}\` exists: use \`dstack secrets update ${name}\``);
      await rename(tmp, join(dir, name));
    } finally {
      await rm(tmp, { force: true });
    }
  }

  async list(scope: SecretScope): Promise<string[]> {
    const entries = await readdir(this.dir(scope), { withFileTypes: true }).catch((e: unknown) => {
      if (errnoCode(e) === 'ENOENT') return [];
      throw e;
    });
    return entries
      .filter((e) => e.isFile() && !e.name.startsWith('.'))
      .map((e) => e.name)
      .sort();
  }

  async delete(scope: SecretScope, name: string): Promise<boolean> {
    checkSecretName(name);
    try {
      await rm(join(this.dir(scope), name));
      return true;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return false;
      throw e;
    }
  }

  /** Removes every value pinned to a run (with `rm` of the run). */
  async deleteRun(repoId: string, runName: string): Promise<void> {
    await rm(this.dir({ repoId, runName }), { recursive: true, force: true });
  }
}

/** Creates `dir` and the folders between `root` and it with mode 0700 (mkdir's mode is masked by the umask). */
async function mkdirPrivate(root: string, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  for (let d = dir; d.startsWith(root) && d.length >= root.length; d = join(d, '..')) {
    await chmod(d, 0o700);
    if (d === root) break;
  }
}
