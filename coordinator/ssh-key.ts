import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode } from '../common/errors.js';

/** The user's SSH key pair for EC2 jobs: the private key's path, its OpenSSH text and the public line. */
export interface UserSshKey {
  privateKeyFile: string;
  privateKey: string;
  publicKey: string;
}

/** `<dstack home>/ssh`: the user's key, and the known_hosts file `dstack ssh --config` writes. */
export function sshDir(home: string): string {
  return join(home, 'ssh');
}

/**
 * The user's key at `<dstack home>/ssh/id_ed25519` (`~/.dstack/ssh/id_ed25519` unless DSTACK_HOME
 * says otherwise), made once when missing: the folder 0700, the private key 0600. The public key
 * goes into the specs of EC2 jobs; it is not a secret. ssh2 loads only when a key must be made.
 */
export async function userSshKey(home: string): Promise<UserSshKey> {
  const dir = sshDir(home);
  const privateKeyFile = join(dir, 'id_ed25519');
  try {
    const [privateKey, publicKey] = await Promise.all([readFile(privateKeyFile, 'utf8'), readFile(`${privateKeyFile}.pub`, 'utf8')]);
    return { privateKeyFile, privateKey, publicKey: publicKey.trim() };
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  // ssh2 is CommonJS: its `utils` is on the default export only.
  const ssh2 = ((await import('ssh2')) as unknown as { default: typeof import('ssh2') }).default;
  const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'dstack' });
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // A folder that existed (made by hand, or by an older version) is narrowed too.
  await chmod(dir, 0o700);
  // Each file appears whole (a temp file renamed), the private key last: a crash leaves no half key.
  const write = async (file: string, text: string, mode: number): Promise<void> => {
    const temp = `${file}.${process.pid}.tmp`;
    await writeFile(temp, text, { mode });
    await rename(temp, file);
  };
  await write(`${privateKeyFile}.pub`, `${pair.public.trim()}\n`, 0o644);
  await write(privateKeyFile, pair.private, 0o600);
  return { privateKeyFile, privateKey: pair.private, publicKey: pair.public.trim() };
}
