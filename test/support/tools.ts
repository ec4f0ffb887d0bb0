import { accessSync, constants, readdirSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

/** Where .ci/run installs code-server: one folder per day, `<root>/YYYY-MM-DD/code-server-<version>`. */
export const CI_CACHE_ROOT = '/var/cache/dstack-ci';

/** The system tools some tests need, and how a user gets each one. */
export const TOOLS = {
  'jupyter-notebook': { install: 'apt-get install jupyter-notebook' },
  'jupyter-lab': { install: 'pip install jupyterlab' },
  'code-server': { install: 'scripts/install-code-server.sh PREFIX, then DSTACK_TEST_CODE_SERVER=PREFIX/node_modules/.bin/code-server' },
  chromium: { install: 'apt-get install chromium' },
  bwrap: { install: 'apt-get install bubblewrap' },
  dockerd: { install: 'apt-get install docker.io' },
  rg: { install: 'apt-get install ripgrep' },
} as const;

export type ToolName = keyof typeof TOOLS;

/** What the lookup reads: the test process's environment, and the CI cache's root (a test's own folder in unit tests). */
export interface ToolEnv {
  env: Record<string, string | undefined>;
  cacheRoot?: string;
}

/**
 * The absolute path of a tool, or undefined. code-server: DSTACK_TEST_CODE_SERVER, else PATH, else
 * the newest install in the CI cache. chromium: /usr/bin/chromium, else PATH. Others: PATH.
 */
export function findTool(name: ToolName, o: ToolEnv = { env: process.env }): string | undefined {
  const onPath = (): string | undefined => firstOnPath(name, o.env.PATH ?? '');
  switch (name) {
    case 'code-server': {
      const given = o.env.DSTACK_TEST_CODE_SERVER;
      if (given !== undefined && given !== '') return isAbsolute(given) && executable(given) ? given : undefined;
      return onPath() ?? cachedCodeServer(o.cacheRoot ?? CI_CACHE_ROOT);
    }
    case 'chromium':
      return executable('/usr/bin/chromium') ? '/usr/bin/chromium' : onPath();
    default:
      return onPath();
  }
}

/** The line a test prints when it skips for want of a tool. */
export function skipReason(name: ToolName): string {
  return `skipped: needs ${name} (${TOOLS[name].install})`;
}

/** The part of mocha's context requireTool uses. */
export interface SkippableContext {
  skip(): never;
  test?: { title: string; type?: string } | undefined;
}

/**
 * The path of a tool the test needs. When it is absent the test is skipped (its title and one line on
 * stderr name the tool and how to install it), except under CI (`CI` set), where `.ci/run` installs
 * every tool and a missing one is a failure.
 */
export function requireTool(ctx: SkippableContext, name: ToolName, o: ToolEnv & { log?: (line: string) => void } = { env: process.env }): string {
  const found = findTool(name, o);
  if (found !== undefined) return found;
  const reason = skipReason(name);
  if (o.env.CI) throw new Error(`${reason.replace(/^skipped: /, '')}: CI must install it (see .ci/run)`);
  (o.log ?? ((line: string) => void process.stderr.write(`${line}\n`)))(reason);
  // In a test (not a hook), the reporter shows the title of a pending test: say why there too.
  if (ctx.test && ctx.test.type === 'test') ctx.test.title += ` (${reason})`;
  return ctx.skip();
}

function firstOnPath(name: string, path: string): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (dir === '' || !isAbsolute(dir)) continue;
    const candidate = join(dir, name);
    if (executable(candidate)) return candidate;
  }
  return undefined;
}

/** `<root>/<day>/code-server-*` and `<root>/code-server-*`, newest day first. */
function cachedCodeServer(root: string): string | undefined {
  const list = (dir: string): string[] => {
    try {
      return readdirSync(dir).sort().reverse();
    } catch {
      return [];
    }
  };
  const days = list(root).filter((e) => /^\d{4}-\d{2}-\d{2}$/.test(e));
  const installs = (dir: string): string[] => list(dir).filter((e) => e.startsWith('code-server-')).map((e) => join(dir, e));
  const dirs = [...days.flatMap((day) => installs(join(root, day))), ...installs(root)];
  return dirs.map((d) => join(d, 'node_modules', '.bin', 'code-server')).find(executable);
}

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
