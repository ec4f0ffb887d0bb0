import { createWriteStream } from 'node:fs';
import { link, mkdir, readdir, readFile, rename, rm, rmdir, stat, unlink, utimes, writeFile, open } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join, relative, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { ConflictError, NotFoundError, errnoCode } from '../errors.js';
import { checkKey } from '../keys.js';
import type { ListOptions, ObjectInfo, Store } from '../ports.js';

/**
 * The embedded Store: one file per object under `root/objects`. Writes go to `root/tmp` and are
 * renamed (or hard-linked, for create-if-absent) into place, so readers never see partial objects.
 */
export class LocalStore implements Store {
  private readonly objects: string;
  /** Where writes are staged; what a crash leaves here is removed by `dstack gc`. */
  readonly tmp: string;

  constructor(root: string) {
    this.objects = join(root, 'objects');
    this.tmp = join(root, 'tmp');
  }

  private path(key: string): string {
    return join(this.objects, ...checkKey(key).split('/'));
  }

  /** Directories known to exist, to save a mkdir per write; a write that finds one gone makes it again. */
  private readonly madeDirs = new Set<string>();

  private async ensureDir(dir: string): Promise<void> {
    if (this.madeDirs.has(dir)) return;
    await mkdir(dir, { recursive: true });
    this.madeDirs.add(dir);
  }

  private async tempFile(): Promise<string> {
    await this.ensureDir(this.tmp);
    return join(this.tmp, `${Date.now()}-${randomBytes(6).toString('hex')}`);
  }

  async put(key: string, data: Buffer | string, options: { ifAbsent?: boolean } = {}): Promise<void> {
    // Write-then-rename survives any process crash; no fsync, since the local backend does not
    // promise to survive the machine losing power, and an fsync per blob would cost more than the write.
    const tmp = await this.tempFile();
    try {
      await writeWhole(tmp, typeof data === 'string' ? Buffer.from(data) : data);
      await this.commit(tmp, key, options.ifAbsent ?? false);
    } catch (e) {
      // A write that failed (a full disk, say) leaves no temp file behind.
      await rm(tmp, { force: true });
      throw e;
    }
  }

  /** Moves a finished temp file into place, creating parent directories (and retrying if a delete raced us). */
  private async commit(tmp: string, key: string, ifAbsent: boolean): Promise<void> {
    const target = this.path(key);
    try {
      for (let attempt = 0; ; attempt++) {
        if (attempt > 0) this.madeDirs.delete(dirname(target));
        await this.ensureDir(dirname(target));
        try {
          if (ifAbsent) await link(tmp, target);
          else await rename(tmp, target);
          return;
        } catch (e) {
          if (errnoCode(e) === 'EEXIST') throw new ConflictError(`object '${key}' already exists`);
          if (errnoCode(e) !== 'ENOENT' || attempt >= 3) throw e;
        }
      }
    } finally {
      if (ifAbsent) await rm(tmp, { force: true });
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const st = await stat(this.path(key));
      return st.isFile() ? { key, sizeBytes: st.size } : undefined;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return undefined;
      throw e;
    }
  }

  async get(key: string): Promise<Buffer | undefined> {
    try {
      return await readWhole(this.path(key));
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return undefined;
      throw e;
    }
  }

  /**
   * Reads an object into `buf` (artifact restores reuse their chunk buffers this way): its size, of
   * which only `buf.length` bytes are read when it is larger; undefined if it does not exist.
   */
  async readInto(key: string, buf: Buffer): Promise<number | undefined> {
    let fh;
    try {
      fh = await open(this.path(key), 'r');
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return undefined;
      throw e;
    }
    try {
      const size = (await fh.stat()).size;
      const want = Math.min(size, buf.length);
      let off = 0;
      while (off < want) {
        const { bytesRead } = await fh.read(buf, off, want - off, off);
        if (bytesRead === 0) break;
        off += bytesRead;
      }
      return size > buf.length ? size : off;
    } finally {
      await fh.close();
    }
  }

  async putStream(key: string, body: Readable): Promise<void> {
    const tmp = await this.tempFile();
    try {
      await pipeline(body, createWriteStream(tmp));
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
    try {
      await this.commit(tmp, key, false);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }

  async getStream(key: string): Promise<Readable> {
    const path = this.path(key);
    try {
      const fh = await open(path, 'r');
      return fh.createReadStream();
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') throw new NotFoundError(`object '${key}' does not exist`);
      throw e;
    }
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ObjectInfo[]> {
    // Walk only the directory the prefix names; its last segment may be a partial name.
    const cut = prefix.lastIndexOf('/');
    const dirKey = cut < 0 ? '' : prefix.slice(0, cut);
    const start = dirKey === '' ? this.objects : this.path(dirKey);
    const out: ObjectInfo[] = [];
    await this.walk(start, prefix, out, options.startAfter ?? '');
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  private async walk(dir: string, prefix: string, out: ObjectInfo[], after: string): Promise<void> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return;
      throw e;
    }
    for (const entry of entries) {
      const full = join(dir, entry.name);
      const key = relative(this.objects, full).split(sep).join('/');
      if (entry.isDirectory()) {
        // Every key below `key/` sorts before `after` when `after` is past `key/` and not inside it: skip the folder.
        const skip = after > `${key}/` && !after.startsWith(`${key}/`);
        if (!skip && (key.startsWith(prefix) || prefix.startsWith(`${key}/`))) await this.walk(full, prefix, out, after);
      } else if (key.startsWith(prefix) && key > after) {
        try {
          const st = await stat(full);
          out.push({ key, sizeBytes: st.size, modifiedAtMs: st.mtimeMs });
        } catch (e) {
          if (errnoCode(e) !== 'ENOENT') throw e;
        }
      }
    }
  }

  async delete(keys: string[]): Promise<void> {
    for (const key of keys) {
      const path = this.path(key);
      try {
        await unlink(path);
      } catch (e) {
        if (errnoCode(e) !== 'ENOENT') throw e;
      }
      await this.pruneDirs(dirname(path));
    }
  }

  async touch(key: string): Promise<boolean> {
    const now = new Date();
    try {
      await utimes(this.path(key), now, now);
      return true;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return false;
      throw e;
    }
  }

  /** Removes now-empty parent directories, stopping at the first that is not empty. */
  private async pruneDirs(dir: string): Promise<void> {
    while (dir.startsWith(this.objects + sep)) {
      try {
        await rmdir(dir);
      } catch {
        return;
      }
      dir = dirname(dir);
    }
  }
}

/**
 * Writes a new file in as few calls as it takes (fs.writeFile writes 512 KiB at a time, which for an
 * 8 MiB blob is 16 trips through the thread pool).
 */
async function writeWhole(path: string, data: Buffer): Promise<void> {
  const fh = await open(path, 'w');
  try {
    for (let off = 0; off < data.length; ) off += (await fh.write(data, off, data.length - off, off)).bytesWritten;
  } finally {
    await fh.close();
  }
}

/** Reads a whole object in as few calls as it takes (fs.readFile reads 512 KiB at a time), into a buffer of its own. */
async function readWhole(path: string): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const buf = Buffer.allocUnsafeSlow(size);
    let off = 0;
    while (off < size) {
      const { bytesRead } = await fh.read(buf, off, size - off, off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    // Objects are renamed into place whole and never written in place, so the size cannot change under us.
    return off < size ? buf.subarray(0, off) : buf;
  } finally {
    await fh.close();
  }
}

/** Writes a file atomically: a temp file in `tmpDir` (same file system), flushed, then renamed into place. */
export async function writeFileAtomic(tmpDir: string, path: string, data: string | Buffer): Promise<void> {
  await mkdir(tmpDir, { recursive: true });
  const tmp = join(tmpDir, `${Date.now()}-${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
