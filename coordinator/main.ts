#!/usr/bin/env node
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline/promises';
import yargs, { type Argv } from 'yargs';
import { loadConfig } from '../common/config.js';
import { DstackError, UsageError, toError } from '../common/errors.js';
import { LocalCompute } from '../common/local/local-compute.js';
import { openLocalBackend } from '../common/local/index.js';
import type { Context } from './context.js';
import { consoleOutput } from './output.js';
import { splitRunArgv } from './run-args.js';

/** argv that starts an agent: the built agent next to this file, or through tsx when run from source. */
function agentCommand(): string[] {
  const here = dirname(fileURLToPath(import.meta.url));
  const built = join(here, '..', 'agent', 'main.js');
  if (existsSync(built)) return [process.execPath, built];
  return [process.execPath, '--import', 'tsx', join(here, '..', 'agent', 'main.ts')];
}

async function makeContext(out: ReturnType<typeof consoleOutput>): Promise<Context> {
  const home = process.env.DSTACK_HOME ?? join(homedir(), '.dstack');
  const config = await loadConfig(home);
  if (config.backend !== 'local') throw new UsageError(`backend \`${config.backend}\` is not available yet: set \`backend: local\` in ${join(home, 'config.yaml')}`);
  const backend = openLocalBackend(config);
  const compute = new LocalCompute({
    registry: backend.registry,
    maxAgents: config.local.maxParallelJobs,
    agentCommand: agentCommand(),
    env: { ...process.env, DSTACK_HOME: home },
    logDir: join(backend.root, 'logs'),
  });
  const interrupted = new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
  const confirm = async (question: string, yes: boolean): Promise<boolean> => {
    if (yes) return true;
    if (!process.stdin.isTTY) throw new UsageError(`${question} Add -y to confirm (stdin is not a terminal).`);
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    const answer = await rl.question(`${question} [y/N] `);
    rl.close();
    return /^y(es)?$/i.test(answer.trim());
  };
  return { config, queue: backend.queue, store: backend.store, compute, out, cwd: process.cwd(), shellEnv: { ...process.env }, interrupted, confirm };
}

async function main(argv: string[]): Promise<number> {
  const out = consoleOutput(process.stdout, process.stderr);
  const debug = argv.includes('--debug');
  let runArgs: string[] = [];
  if (argv[0] === 'run') {
    const split = splitRunArgv(argv.slice(1));
    runArgs = split.args;
    argv = ['run', ...split.options, ...(split.workflow === undefined ? [] : [split.workflow])];
  }
  let code = 0;
  const ctx = (): Promise<Context> => makeContext(out);
  const cli: Argv = yargs(argv)
    .scriptName('dstack')
    .usage('dstack COMMAND [OPTIONS]\n\nRun reproducible ML workflows on local agents or cloud GPUs.')
    .option('debug', { type: 'boolean', describe: 'Show stack traces on errors' })
    .command(
      'run [workflow]',
      'Run a workflow: dstack run WORKFLOW [-d] [--dry-run] [ARGS...]',
      (y) =>
        y
          .positional('workflow', { type: 'string', describe: 'Workflow name from .dstack/workflows.yaml' })
          .option('detach', { alias: 'd', type: 'boolean', describe: 'Submit and return without following the logs' })
          .option('dry-run', { type: 'boolean', describe: 'Print the resolved job spec as JSON; enqueue nothing' }),
      async (a) => {
        if (!a.workflow) throw new UsageError('name a workflow: dstack run WORKFLOW [ARGS...] (see .dstack/workflows.yaml)');
        const { runCommand } = await import('./commands/run.js');
        code = await runCommand(await ctx(), { workflow: a.workflow, args: runArgs, detach: a.detach ?? false, dryRun: a['dry-run'] ?? false });
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
          .option('yes', { alias: 'y', type: 'boolean', describe: 'Do not ask for confirmation' }),
      async (a) => {
        const { rmCommand } = await import('./commands/rm.js');
        code = await rmCommand(await ctx(), { run: a.run, all: a.all ?? false, yes: a.yes ?? false });
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
