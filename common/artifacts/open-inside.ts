import { closeSync, constants, openSync, readFileSync, readlinkSync } from 'node:fs';
import { open, readlink, realpath, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

/** Opens the files of one artifact folder for reading (see `insideOpener`). */
export type OpenInside = (rel: string) => Promise<FileHandle>;

/**
 * An opener for the files of an artifact folder that refuses a file no longer inside it. The agent
 * may read a job's folder with more rights than the job (as root, on EC2) while the job still runs
 * (`mount: true`), so a file the walk saw as a regular file may have been swapped for a link, or a
 * folder on its path for a link to elsewhere, by the time it is opened. O_NOFOLLOW refuses a link as
 * the last name, and the path the kernel opened (/proc/self/fd) must be the one asked for, so a link
 * anywhere on the path is refused too. The folder's real path is taken once, at the first open.
 */
export function insideOpener(root: string): OpenInside {
  let real: Promise<string> | undefined;
  return async (rel) => {
    real ??= realpath(root);
    const base = await real;
    const fh = await open(join(root, rel), constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      const opened = await readlink(`/proc/self/fd/${fh.fd}`).catch(() => undefined);
      checkOpened(opened, root, base, rel);
      return fh;
    } catch (e) {
      await fh.close();
      throw e;
    }
  };
}

/** Reads a whole file of an artifact folder through `openInside`. */
export async function readInside(openInside: OpenInside, rel: string): Promise<Buffer> {
  const fh = await openInside(rel);
  try {
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

/** Without /proc (not Linux) only the last name is checked (by O_NOFOLLOW). */
function checkOpened(opened: string | undefined, root: string, base: string, rel: string): void {
  if (opened !== undefined && opened !== join(base, rel)) {
    throw new Error(`artifact file ${rel} is no longer inside ${root} (a link on its path, made while it was being saved): not saved`);
  }
}

/**
 * The same checks as `insideOpener`, for whole small files read synchronously: for thousands of small
 * files, four thread-pool round trips each (open, readlink, read, close) cost more than they block.
 */
export async function insideReaderSync(root: string): Promise<(rel: string) => Buffer> {
  const base = await realpath(root);
  return (rel) => {
    const fd = openSync(join(root, rel), constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      let opened: string | undefined;
      try {
        opened = readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        opened = undefined;
      }
      checkOpened(opened, root, base, rel);
      return readFileSync(fd);
    } finally {
      closeSync(fd);
    }
  };
}
