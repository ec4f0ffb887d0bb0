import yargs, { type Argv } from 'yargs';
import { UsageError } from '../common/errors.js';
import type { Context } from './context.js';
import type { Output } from './output.js';
import { declareRunOptions, parseRunArgv, splitRunArgv } from './run-args.js';
import { CONFIG_FLAGS, type ConfigContext } from './commands/config.js';

/** What the command table needs from the composition root. Opening a backend is deferred to the handlers that use one. */
export interface CliDeps {
  out: Output;
  cwd: string;
  version: string;
  /** Opens the backend: only commands that use it call this, so help and usage errors stay fast. */
  context: () => Promise<Context>;
  /** `dstack config` runs without a backend: it is how a broken one gets fixed. */
  configContext: () => ConfigContext;
  /** Starts listening for SIGTERM and resolves on it: only long-running commands (`dstack ui`) call it, so others keep the default. */
  terminated?: () => Promise<void>;
}

/**
 * The command table: one `.command` per verb, each declaring its options and loading its module
 * only when it runs. `parse()` resolves to the exit code; every usage error is a UsageError (exit 2).
 */
export function buildCli(argv: string[], deps: CliDeps): { parse: () => Promise<number> } {
  // Run's options may come on either side of the workflow name (0.0.14): the split puts them after it.
  // Only flags (--debug) may come before the command name.
  const at = argv.findIndex((t) => !t.startsWith('-'));
  const runArgv = argv[at] === 'run' ? argv.slice(at + 1) : [];
  if (argv[at] === 'run') {
    const split = splitRunArgv(runArgv);
    // The workflow goes first: array options such as -e would swallow a positional after them.
    argv = [...argv.slice(0, at), 'run', ...(split.workflow === undefined ? [] : [split.workflow]), ...split.options];
  }
  let code = 0;
  const { context: ctx, out } = deps;
  // `dstack run <TAB>`: the repo's workflows (yargs completes the rest: commands and options).
  const completing = argv[0] === '--get-yargs-completions' ? argv.slice(2) : [];
  if (completing[0] === 'run' && completing.length === 2 && !(completing[1] ?? '').startsWith('-')) {
    const current = completing[1] ?? '';
    return {
      parse: async () => {
        const { workflowNames } = await import('./workflow-names.js');
        for (const name of await workflowNames(deps.cwd)) if (name.startsWith(current)) out.line(name);
        return 0;
      },
    };
  }
  const cli: Argv = yargs(argv)
    .scriptName('dstack')
    .usage('dstack COMMAND [OPTIONS]\n\nRun reproducible ML workflows on local agents or cloud GPUs.')
    .option('debug', { type: 'boolean', describe: 'Show stack traces on errors' })
    .command(
      'run [workflow]',
      'Run a workflow: dstack run WORKFLOW [-d] [-t TAG] [OVERRIDES] [ARGS...]',
      (y) => declareRunOptions(y.positional('workflow', { type: 'string', describe: 'Workflow name from .dstack/workflows.yaml (none: list them)' })),
      async () => {
        const { workflow, options } = parseRunArgv(runArgv);
        if (!workflow) {
          const { noWorkflowMessage } = await import('./workflow-names.js');
          throw new UsageError(await noWorkflowMessage(deps.cwd));
        }
        const { runCommand } = await import('./commands/run.js');
        code = await runCommand(await ctx(), { workflow, ...options });
      },
    )
    .command(
      'init',
      'Write a starter .dstack/workflows.yaml (never overwrites one)',
      (y) => y,
      async () => {
        const { initCommand } = await import('./commands/init.js');
        code = await initCommand({ cwd: deps.cwd, out });
      },
    )
    .command(
      'restart <run>',
      'Run a run again with the same code, spec and pinned deps, under a new name',
      (y) =>
        y
          .positional('run', { type: 'string', demandOption: true })
          .option('detach', { alias: 'd', type: 'boolean', describe: 'Submit and return without following the logs' })
          .option('force', { type: 'boolean', describe: "Restart another owner's run that pins values from their shell" }),
      async (a) => {
        const { restartCommand } = await import('./commands/restart.js');
        code = await restartCommand(await ctx(), { run: a.run, detach: a.detach ?? false, force: a.force ?? false });
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
    .command('secrets', "Manage the repo's secrets (env vars of its jobs, masked in logs): add, list, update, delete", (y) =>
      y
        .command(
          'add <name> [value]',
          'Add a secret (no VALUE: asked for on a terminal, else read from stdin)',
          (yy) => yy.positional('name', { type: 'string', demandOption: true }).positional('value', { type: 'string' }),
          async (a) => {
            const { secretsAddCommand } = await import('./commands/secrets.js');
            code = await secretsAddCommand(await ctx(), { name: a.name, value: a.value });
          },
        )
        .command(
          'list',
          'List the names of the secrets (never their values)',
          (yy) => yy,
          async () => {
            const { secretsListCommand } = await import('./commands/secrets.js');
            code = await secretsListCommand(await ctx());
          },
        )
        .command(
          'update <name> [value]',
          'Change the value of a secret (no VALUE: asked for on a terminal, else read from stdin)',
          (yy) => yy.positional('name', { type: 'string', demandOption: true }).positional('value', { type: 'string' }),
          async (a) => {
            const { secretsUpdateCommand } = await import('./commands/secrets.js');
            code = await secretsUpdateCommand(await ctx(), { name: a.name, value: a.value });
          },
        )
        .command(
          'delete <name>',
          'Delete a secret',
          (yy) => yy.positional('name', { type: 'string', demandOption: true }).option('yes', { alias: 'y', type: 'boolean' }),
          async (a) => {
            const { secretsDeleteCommand } = await import('./commands/secrets.js');
            code = await secretsDeleteCommand(await ctx(), { name: a.name, yes: a.yes ?? false });
          },
        )
        .demandCommand(1, 'name a secrets command: add, list, update or delete'),
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
        code = await configCommand(
          deps.configContext(),
          Object.fromEntries(Object.keys(CONFIG_FLAGS).flatMap((flag) => (a[flag] === undefined ? [] : [[flag, a[flag] as string | number]]))),
        );
      },
    )
    .command(
      'coordinator',
      'Keep reconciling: replace lost capacity while jobs are queued (run does it for its own job)',
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
      'ssh <run> [command..]',
      "A shell in a running job's folder on its EC2 instance (--config: a Host block for ~/.ssh/config and VS Code)",
      (y) =>
        y
          .positional('run', { type: 'string', demandOption: true })
          .positional('command', { type: 'string', array: true, describe: 'Run this instead of a shell' })
          .option('config', { type: 'boolean', describe: 'Print a Host block for ~/.ssh/config and the VS Code link' }),
      async (a) => {
        const { sshCommand } = await import('./commands/ssh.js');
        const terminal = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr };
        code = await sshCommand(await ctx(), { run: a.run, config: a.config ?? false, command: (a.command ?? []).map(String) }, terminal);
      },
    )
    .command(
      'attach <run>',
      'Reattach to a running run: its logs, the links of its dev environment and ports (and on EC2 their SSH forwards)',
      (y) => y.positional('run', { type: 'string', demandOption: true, describe: 'Run name' }),
      async (a) => {
        const { attachCommand } = await import('./commands/attach.js');
        code = await attachCommand(await ctx(), a.run);
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
          .option('yes', { alias: 'y', type: 'boolean', describe: 'Do not ask for confirmation' })
          .option('force', { type: 'boolean', describe: "Stop another owner's run (-a: other owners' runs too)" }),
      async (a) => {
        const { stopCommand } = await import('./commands/stop.js');
        code = await stopCommand(await ctx(), { run: a.run, all: a.all ?? false, abort: a.abort ?? false, yes: a.yes ?? false, force: a.force ?? false });
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
          .option('force', { type: 'boolean', describe: "Delete a run that tags point to (and those tags), or another owner's run" }),
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
    .command(
      'ui',
      'Serve a dashboard of runs, logs, artifacts, machines and cost on 127.0.0.1 (until Ctrl-C)',
      (y) =>
        y
          .option('port', { type: 'number', default: 0, describe: 'Port on 127.0.0.1 (0: a free one)' })
          .option('open', { type: 'boolean', default: true, describe: 'Open the browser when there is a display (--no-open: only print the URL)' }),
      async (a) => {
        if (!Number.isInteger(a.port) || a.port < 0 || a.port > 65535) throw new UsageError(`--port ${a.port}: give a port number from 0 (a free one) to 65535`);
        const { uiCommand } = await import('./commands/ui.js');
        code = await uiCommand(await ctx(), { port: a.port, open: a.open }, { terminated: deps.terminated?.() ?? new Promise<void>(() => undefined) });
      },
    )
    .completion('completion', 'Print a bash/zsh completion script: dstack completion >> ~/.bashrc')
    .demandCommand(1, 'name a command: see `dstack --help`')
    .strict()
    .help()
    .alias('h', 'help')
    .version(deps.version)
    // yargs would call process.exit after --help or --version; the process ends when output has drained.
    .exitProcess(false)
    .fail((msg, err) => {
      throw err ?? new UsageError(msg);
    });
  return {
    parse: async () => {
      await cli.parseAsync();
      return code;
    },
  };
}
