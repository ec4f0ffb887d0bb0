import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Placeholder until the tools helper lands: the tool's path, or a skip (a failure under CI). */
export function requireTool(ctx: Mocha.Context, name: string): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/var/cache/dstack-ci/code-server-4.99.4/node_modules/.bin'];
  for (const d of dirs) {
    try {
      accessSync(join(d, name), constants.X_OK);
      return join(d, name);
    } catch {
      // Not here.
    }
  }
  if (process.env.CI) throw new Error(`${name} is not installed`);
  ctx.skip();
}
