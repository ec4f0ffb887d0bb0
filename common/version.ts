import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The version in dstack's package.json, found by walking up from a module's URL. */
export function toolVersion(moduleUrl: string): string {
  let dir = dirname(fileURLToPath(moduleUrl));
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'dstack' && pkg.version) return pkg.version;
    } catch {
      // Not here; look one level up.
    }
    dir = dirname(dir);
  }
  return 'unknown';
}
