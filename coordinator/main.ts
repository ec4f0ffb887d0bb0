#!/usr/bin/env node
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline/promises';
import yargs, { type Argv } from 'yargs';
import { loadConfig } from '../common/config.js';
import { DstackError, UsageError, toError } from '../common/errors.js';
import { ExternalAgents, LocalCompute } from '../common/local/local-compute.js';
import type { Compute } from '../common/ports.js';
import { openBackend } from '../common/backend.js';
import type { Context } from './context.js';
import { consoleOutput } from './output.js';
import type { Overrides } from './overrides.js';
import { splitRunArgv } from './run-args.js';
import { CONFIG_FLAGS } from './commands/config.js';
import { toolVersion } from '../common/version.js';

/** argv that starts an agent: the built agent next to this file, or through tsx when run from source. */
function agentCommand(): string[] {
  const here = dirname(fileURLToPath(import.meta.url));
  const built = join(here, '..', 'agent', 'main.js');
  if (existsSync(built)) return [process.execPath, built];
  return [process.execPath, '--import', 'tsx', join(here, '..', 'agent', 'main.ts')];
}

/** One line typed at the terminal (prompt on stderr), trimmed. */
async function askLine(prompt: string): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return (await rl.question(prompt)).trim();
  } finally {
    rl.close();
  }
}

async function makeContext(out: ReturnType<typeof consoleOutput>): Promise<Context> {
  const home = process.env.DSTACK_HOME ?? join(homedir(), '.dstack');
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const config = await loadConfig(home, process.env);
  const backend = await openBackend(config);
  const agents = config.backend === 'aws' ? (config.aws?.agents ?? 'ec2') : 'local';
  let compute: Compute;
  if (agents === 'local') {
    compute = new LocalCompute({
      registry: backend.registry,
      maxAgents: config.local.maxParallelJobs,
      agentCommand: agentCommand(),
      env: { ...process.env, DSTACK_HOME: home },
      logDir: join(backend.root, 'logs'),
    });
  } else if (agents === 'none') {
    compute = new ExternalAgents();
  } else {
    const { openEc2Fleet } = await import('../common/aws/fleet.js');
    compute = openEc2Fleet(config, config.aws?.profile);
  }
  const interrupted = new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
  const confirm = async (question: string, yes: boolean): Promise<boolean> => {
    if (yes) return true;
    if (!process.stdin.isTTY) throw new UsageError(`${question} Add -y to confirm (stdin is not a terminal).`);
    return /^y(es)?$/i.test(await askLine(`${question} [y/N] `));
  };
  return {
    config,
    queueFor: backend.queueFor,
    store: backend.store,
    compute,
    out,
    cwd: process.cwd(),
    toolVersion: toolVersion(import.meta.url),
    shellEnv: { ...process.env },
    interrupted,
    confirm,
  };
}

/** The per-run overrides of 0.0.14, for `run`. */
function withOverrides<T>(y: Argv<T>) {
  return y
    .option('env', { alias: 'e', type: 'string', array: true, describe: 'Set an environment variable: -e K=V (or -e K to pass your value)' })
    .option('artifact', { alias: 'a', type: 'string', array: true, describe: 'Save another path as an artifact' })
    .option('dep', { type: 'string', array: true, describe: 'Add a dep: --dep :TAG or --dep WORKFLOW' })
    .option('working-dir', { alias: 'w', type: 'string', describe: 'Working directory, relative to the repo root' })
    .option('cpu', { type: 'number', describe: 'CPUs' })
    .option('memory', { type: 'string', describe: 'Memory, e.g. 16GB' })
    .option('gpu', { type: 'number', describe: 'GPU count' })
    .option('gpu-name', { type: 'string', describe: 'GPU name, e.g. V100' })
    .option('gpu-memory', { type: 'string', describe: 'GPU memory, e.g. 16GB' })
    .option('shm-size', { type: 'string', describe: 'Shared memory size, e.g. 8GB' })
    .option('interruptible', { alias: 'i', type: 'boolean', describe: 'Allow a spot (interruptible) machine' });
}

function overridesFrom(a: {
  env?: string[] | undefined;
  artifact?: string[] | undefined;
  dep?: string[] | undefined;
  'working-dir'?: string | undefined;
  cpu?: number | undefined;
  memory?: string | undefined;
  gpu?: number | undefined;
  'gpu-name'?: string | undefined;
  'gpu-memory'?: string | undefined;
  'shm-size'?: string | undefined;
  interruptible?: boolean | undefined;
}): Overrides {
  const o: Overrides = { env: a.env ?? [], artifacts: a.artifact ?? [], deps: a.dep ?? [] };
  if (a['working-dir'] !== undefined) o.workingDir = a['working-dir'];
  if (a.cpu !== undefined) o.cpu = a.cpu;
  if (a.memory !== undefined) o.memory = a.memory;
  if (a.gpu !== undefined) o.gpu = a.gpu;
  if (a['gpu-name'] !== undefined) o.gpuName = a['gpu-name'];
  if (a['gpu-memory'] !== undefined) o.gpuMemory = a['gpu-memory'];
  if (a['shm-size'] !== undefined) o.shmSize = a['shm-size'];
  if (a.interruptible) o.interruptible = true;
  return o;
}

async function main(argv: string[]): Promise<number> {
  const out = consoleOutput(process.stdout, process.stderr);
  const debug = argv.includes('--debug');
  let runArgs: string[] = [];
  let overrideArgv: string[] = [];
  if (argv[0] === 'run') {
    const split = splitRunArgv(argv.slice(1));
    runArgs = split.args;
    overrideArgv = split.overrides;
    // The workflow goes first: array options such as -e would swallow a positional after them.
    argv = ['run', ...(split.workflow === undefined ? [] : [split.workflow]), ...split.options];
  }
  let code = 0;
  const ctx = (): Promise<Context> => makeContext(out);
  const cli: Argv = yargs(argv)
    .scriptName('dstack')
    .usage('dstack COMMAND [OPTIONS]\n\nRun reproducible ML workflows on local agents or cloud GPUs.')
    .option('debug', { type: 'boolean', describe: 'Show stack traces on errors' })
    .command(
      'run [workflow]',
      'Run a workflow: dstack run WORKFLOW [-d] [-t TAG] [OVERRIDES] [ARGS...]',
      (y) =>
        withOverrides(y)
          .positional('workflow', { type: 'string', describe: 'Workflow name from .dstack/workflows.yaml' })
          .option('detach', { alias: 'd', type: 'boolean', describe: 'Submit and return without following the logs' })
          .option('dry-run', { type: 'boolean', describe: 'Print the resolved job spec as JSON; enqueue nothing' })
          .option('tag', { alias: 't', type: 'string', describe: 'Tag the run (replaces an existing tag of that name)' })
          .option('cache', { type: 'boolean', default: true, describe: 'Reuse an identical earlier run of a `cache: true` workflow (--no-cache forces a run)' }),
      async (a) => {
        if (!a.workflow) throw new UsageError('name a workflow: dstack run WORKFLOW [ARGS...] (see .dstack/workflows.yaml)');
        const { runCommand } = await import('./commands/run.js');
        code = await runCommand(await ctx(), {
          workflow: a.workflow,
          args: runArgs,
          detach: a.detach ?? false,
          dryRun: a['dry-run'] ?? false,
          tag: a.tag,
          useCache: a.cache,
          overrides: overridesFrom(a),
          overrideArgv,
        });
      },
    )
    .command(
      'restart <run>',
      'Run a run again with the same code, spec and pinned deps, under a new name',
      (y) =>
        y
          .positional('run', { type: 'string', demandOption: true })
          .option('detach', { alias: 'd', type: 'boolean', describe: 'Submit and return without following the logs' }),
      async (a) => {
        const { restartCommand } = await import('./commands/restart.js');
        code = await restartCommand(await ctx(), { run: a.run, detach: a.detach ?? false });
      },
    )
    .command('tags', 'Manage tags: add, list, delete', (y) =>
      y
        .command(
          'add <tag> [run]',
          'Tag a run, or upload local folders (-a) as a new tagged run',
          (yy) =>
            yy
              .positional('tag', { type: 'string', demandOption: true })
              .positional('run', { type: 'string' })
              .option('artifact', { alias: 'a', type: 'string', array: true, describe: 'A local folder to upload as an artifact' }),
          async (a) => {
            const { tagsAddCommand } = await import('./commands/tags.js');
            code = await tagsAddCommand(await ctx(), { tag: a.tag, run: a.run, paths: a.artifact ?? [] });
          },
        )
        .command(
          'list',
          'List tags',
          (yy) => yy.option('json', { type: 'boolean' }),
          async (a) => {
            const { tagsListCommand } = await import('./commands/tags.js');
            code = await tagsListCommand(await ctx(), { json: a.json ?? false });
          },
        )
        .command(
          'delete <tag>',
          'Delete a tag (the run stays)',
          (yy) => yy.positional('tag', { type: 'string', demandOption: true }).option('yes', { alias: 'y', type: 'boolean' }),
          async (a) => {
            const { tagsDeleteCommand } = await import('./commands/tags.js');
            code = await tagsDeleteCommand(await ctx(), { tag: a.tag, yes: a.yes ?? false });
          },
        )
        .demandCommand(1, 'name a tags command: add, list or delete'),
    )
    .command('artifacts', 'List or download the artifacts of a run', (y) =>
      y
        .command(
          'list <run>',
          'Paths, file counts and sizes of the artifacts of RUN or :TAG',
          (yy) => yy.positional('run', { type: 'string', demandOption: true }).option('json', { type: 'boolean' }),
          async (a) => {
            const { artifactsListCommand } = await import('./commands/artifacts.js');
            code = await artifactsListCommand(await ctx(), { run: a.run, json: a.json ?? false });
          },
        )
        .command(
          'download <run>',
          'Download the artifacts of RUN or :TAG, checking their integrity',
          (yy) => yy.positional('run', { type: 'string', demandOption: true }).option('output', { alias: 'o', type: 'string', describe: 'Directory (default: .)' }),
          async (a) => {
            const { artifactsDownloadCommand } = await import('./commands/artifacts.js');
            code = await artifactsDownloadCommand(await ctx(), { run: a.run, output: a.output ?? '.' });
          },
        )
        .demandCommand(1, 'name an artifacts command: list or download'),
    )
    .command(
      'config',
      'Set the backend (local or aws) and its settings; asks on a terminal when no flag is given',
      (y) => {
        for (const [flag, f] of Object.entries(CONFIG_FLAGS)) y.option(flag, { type: f.type, describe: f.describe, ...('choices' in f ? { choices: f.choices } : {}) });
        return y;
      },
      async (a) => {
        const { configCommand } = await import('./commands/config.js');
        const home = process.env.DSTACK_HOME ?? join(homedir(), '.dstack');
        process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
        const ask = process.stdin.isTTY
          ? async (question: string, fallback: string): Promise<string> => (await askLine(`${question}${fallback ? ` [${fallback}]` : ''}: `)) || fallback
          : undefined;
        code = await configCommand(
          {
            home,
            out,
            env: process.env,
            ...(ask ? { ask } : {}),
            check: async () => void (await openBackend(await loadConfig(home, process.env))),
          },
          Object.fromEntries(Object.keys(CONFIG_FLAGS).flatMap((flag) => (a[flag] === undefined ? [] : [[flag, a[flag] as string | number]]))),
        );
      },
    )
    .command(
      'coordinator',
      'Keep reconciling: replace lost capacity while jobs are queued (run and ps reconcile once)',
      (y) => y.option('interval', { type: 'number', default: 10, describe: 'Seconds between passes' }),
      async (a) => {
        const { coordinatorCommand } = await import('./fleet.js');
        code = await coordinatorCommand(await ctx(), { intervalSec: Math.max(1, a.interval) });
      },
    )
    .command(
      'ps [run]',
      'Show the status of runs',
      (y) =>
        y
          .positional('run', { type: 'string' })
          .option('all', { alias: 'a', type: 'boolean', describe: 'Show all runs, finished ones included' })
          .option('json', { type: 'boolean', describe: 'Print JSON for scripts' }),
      async (a) => {
        const { psCommand } = await import('./commands/ps.js');
        code = await psCommand(await ctx(), { run: a.run, all: a.all ?? false, json: a.json ?? false });
      },
    )
    .command(
      'logs <run>',
      "Show a run's output",
      (y) =>
        y
          .positional('run', { type: 'string', demandOption: true })
          .option('follow', { alias: 'f', type: 'boolean', describe: 'Keep following until the run ends' })
          .option('since', { alias: 's', type: 'string', describe: 'Only output newer than a duration (30m, 1h, 2d) or an ISO time' }),
      async (a) => {
        const { logsCommand } = await import('./commands/logs.js');
        code = await logsCommand(await ctx(), { run: a.run, follow: a.follow ?? false, since: a.since });
      },
    )
    .command(
      'stop [run]',
      'Stop a run (SIGTERM, then SIGKILL after the grace period)',
      (y) =>
        y
          .positional('run', { type: 'string' })
          .option('all', { alias: 'a', type: 'boolean', describe: 'Stop every unfinished run' })
          .option('abort', { alias: 'x', type: 'boolean', describe: 'Kill at once (SIGKILL) instead of stopping gracefully' })
          .option('yes', { alias: 'y', type: 'boolean', describe: 'Do not ask for confirmation' }),
      async (a) => {
        const { stopCommand } = await import('./commands/stop.js');
        code = await stopCommand(await ctx(), { run: a.run, all: a.all ?? false, abort: a.abort ?? false, yes: a.yes ?? false });
      },
    )
    .command(
      'rm [run]',
      'Delete finished runs with their logs',
      (y) =>
        y
          .positional('run', { type: 'string' })
          .option('all', { alias: 'a', type: 'boolean', describe: 'Delete every finished run' })
          .option('yes', { alias: 'y', type: 'boolean', describe: 'Do not ask for confirmation' })
          .option('force', { type: 'boolean', describe: 'Delete a run that tags point to, and those tags' }),
      async (a) => {
        const { rmCommand } = await import('./commands/rm.js');
        code = await rmCommand(await ctx(), { run: a.run, all: a.all ?? false, yes: a.yes ?? false, force: a.force ?? false });
      },
    )
    .command(
      'gc',
      'Remove what crashes and rm leave behind: dead job folders, temp files, unreferenced artifact blobs',
      (y) => y.option('dry-run', { type: 'boolean', describe: 'Only list what would be removed' }),
      async (a) => {
        const { gcCommand } = await import('./commands/gc.js');
        code = await gcCommand(await ctx(), { dryRun: a['dry-run'] ?? false });
      },
    )
    .demandCommand(1, 'name a command: see `dstack --help`')
    .strict()
    .help()
    .alias('h', 'help')
    .version(false)
    .fail((msg, err) => {
      throw err ?? new UsageError(msg);
    });
  try {
    await cli.parseAsync();
    return code;
  } catch (e) {
    const err = toError(e);
    if (debug) out.note(err.stack ?? err.message);
    else out.note(err instanceof DstackError ? err.message : `dstack: ${err.message}`);
    return err instanceof UsageError ? 2 : 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Give the output streams a moment to flush, then leave even if a watcher is still open.
    setImmediate(() => process.exit(code));
  },
  (e: unknown) => {
    process.stderr.write(`dstack: ${toError(e).message}\n`);
    process.exit(1);
  },
);
