import { access, constants } from 'node:fs/promises';
import { delimiter, isAbsolute, join } from 'node:path';
import type { ServerProvider } from './spec/schema.js';

/** The run secret that holds a dev environment's token: pinned by `dstack run`, read by the agent and by `ps`/`attach`. */
export const SERVER_TOKEN = 'DSTACK_SERVER_TOKEN';

/** The programs behind the dev-environment providers, and how a user gets each one. */
export const DEV_SERVERS: Record<ServerProvider, { binary: string; what: string; install: string }> = {
  code: {
    binary: 'code-server',
    what: 'code-server (VS Code in the browser)',
    install: 'install it with `npm install -g code-server@4.99` (see the README, "Dev environments") or set `local.codeServer` to its path with `dstack config`',
  },
  lab: {
    binary: 'jupyter-lab',
    what: 'JupyterLab',
    install: 'install it with `pip install jupyterlab` (or `conda install jupyterlab`) so that `jupyter-lab` is on PATH',
  },
  notebook: {
    binary: 'jupyter-notebook',
    what: 'the Jupyter Notebook',
    install: 'install it with `apt-get install jupyter-notebook` or `pip install notebook` so that `jupyter-notebook` is on PATH',
  },
};

/**
 * The absolute path of a dev environment's server program: `local.codeServer` for `code` when set,
 * else the first executable of its name on `path`. Undefined when there is none.
 */
export async function findDevServer(provider: ServerProvider, path: string, codeServer?: string): Promise<string | undefined> {
  if (provider === 'code' && codeServer !== undefined) return (await isExecutable(codeServer)) && isAbsolute(codeServer) ? codeServer : undefined;
  const name = DEV_SERVERS[provider].binary;
  for (const dir of path.split(delimiter).filter((d) => d.length > 0 && isAbsolute(d))) {
    const candidate = join(dir, name);
    if (await isExecutable(candidate)) return candidate;
  }
  return undefined;
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    await access(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
