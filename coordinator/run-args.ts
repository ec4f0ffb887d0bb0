import yargs, { type Argv } from 'yargs';
import { UsageError } from '../common/errors.js';
import type { RunOptions } from './commands/run.js';
import type { Overrides } from './overrides.js';

/** One option of `dstack run`. */
export interface RunOption {
  alias?: string;
  type: 'boolean' | 'string' | 'number';
  /** May be given more than once (-e A=1 -e B=2). */
  array?: boolean;
  default?: boolean;
  describe: string;
  /**
   * Set for the 0.0.14 overrides: options that change what runs. They are kept in the run record as
   * typed, and applied to the spec as this field of `Overrides`.
   */
  override?: keyof Overrides;
}

/**
 * `dstack run`'s options, in the order the help lists them. yargs declares them from this table,
 * `splitRunArgv` tells them from workflow arguments with it, and `overridesFrom` reads them back.
 * A boolean also takes its `--no-` form.
 */
export const RUN_OPTIONS = {
  detach: { alias: 'd', type: 'boolean', describe: 'Submit and return without following the logs' },
  'dry-run': { type: 'boolean', describe: 'Print the resolved job spec as JSON; enqueue nothing' },
  tag: { alias: 't', type: 'string', describe: 'Tag the run' },
  force: { type: 'boolean', describe: 'With -t: move an existing tag' },
  cache: { type: 'boolean', default: true, describe: 'Reuse an identical earlier run of a `cache: true` workflow (--no-cache forces a run)' },
  env: { alias: 'e', type: 'string', array: true, override: 'env', describe: 'Set an environment variable: -e K=V (or -e K to pass your value)' },
  artifact: { alias: 'a', type: 'string', array: true, override: 'artifacts', describe: 'Save another path as an artifact' },
  dep: { type: 'string', array: true, override: 'deps', describe: 'Add a dep: --dep :TAG or --dep WORKFLOW' },
  'working-dir': { alias: 'w', type: 'string', override: 'workingDir', describe: 'Working directory, relative to the repo root' },
  cpu: { type: 'number', override: 'cpu', describe: 'CPUs' },
  memory: { type: 'string', override: 'memory', describe: 'Memory, e.g. 16GB' },
  gpu: { type: 'number', override: 'gpu', describe: 'GPU count' },
  'gpu-name': { type: 'string', override: 'gpuName', describe: 'GPU name, e.g. V100' },
  'gpu-memory': { type: 'string', override: 'gpuMemory', describe: 'GPU memory, e.g. 16GB' },
  'shm-size': { type: 'string', override: 'shmSize', describe: 'Shared memory size, e.g. 8GB' },
  interruptible: { alias: 'i', type: 'boolean', override: 'interruptible', describe: 'Allow a spot (interruptible) machine' },
} as const satisfies Record<string, RunOption>;

export type RunOptionName = keyof typeof RUN_OPTIONS;

/** Flags every command takes, so `run` lets them through as well. */
const GLOBAL_FLAGS = new Set(['--debug', '-h', '--help']);

/** What a token on the command line names: a table entry and whether it carries a value. */
function lookup(name: string): { option: RunOption; takesValue: boolean } | 'global' | undefined {
  if (GLOBAL_FLAGS.has(name)) return 'global';
  for (const [long, option] of Object.entries(RUN_OPTIONS) as [string, RunOption][]) {
    const boolean = option.type === 'boolean';
    if (name === `--${long}` || ('alias' in option && name === `-${option.alias}`)) return { option, takesValue: !boolean };
    if (boolean && name === `--no-${long}`) return { option, takesValue: false };
  }
  return undefined;
}

export interface SplitRun {
  /** dstack's own options, for yargs. */
  options: string[];
  /** The subset of `options` that override the workflow (with their values). */
  overrides: string[];
  workflow: string | undefined;
  /** Everything meant for the workflow: `${{ run.args }}`. */
  args: string[];
}

/**
 * Splits `run [OPTIONS] WORKFLOW [OPTIONS] [ARGS...]` as 0.0.14 did: dstack's options (RUN_OPTIONS)
 * may come on either side of the workflow name; the first token after it that is not one of them
 * starts ARGS (and so does `--`).
 */
export function splitRunArgv(argv: string[]): SplitRun {
  const options: string[] = [];
  const overrides: string[] = [];
  let workflow: string | undefined;
  let i = 0;
  const takeOption = (): boolean => {
    const token = argv[i] ?? '';
    const eq = token.startsWith('--') ? token.indexOf('=') : -1;
    const found = lookup(eq > 0 ? token.slice(0, eq) : token);
    if (found === undefined) return false;
    const sinks = found !== 'global' && found.option.override !== undefined ? [options, overrides] : [options];
    const take = (t: string): void => void sinks.forEach((s) => s.push(t));
    take(token);
    if (found !== 'global' && found.takesValue && eq < 0) {
      if (i + 1 >= argv.length) throw new UsageError(`${token} needs a value: see \`dstack run --help\``);
      take(argv[i + 1] ?? '');
      i += 1;
    }
    i += 1;
    return true;
  };
  while (i < argv.length && workflow === undefined) {
    const token = argv[i] ?? '';
    if (takeOption()) continue;
    if (token.startsWith('-') && token !== '-') throw new UsageError(`unknown option ${token} before the workflow name: see \`dstack run --help\``);
    workflow = token;
    i += 1;
  }
  while (i < argv.length && (argv[i] ?? '').startsWith('-') && argv[i] !== '--' && takeOption());
  if (argv[i] === '--') i += 1;
  return { options, overrides, workflow, args: argv.slice(i) };
}

/** The overrides among yargs' parsed `run` options. */
export function overridesFrom(parsed: Readonly<Record<string, unknown>>): Overrides {
  const o: Overrides = { env: [], artifacts: [], deps: [] };
  for (const [name, option] of Object.entries(RUN_OPTIONS) as [string, RunOption][]) {
    const value = parsed[name];
    if (option.override === undefined || value === undefined) continue;
    const expected = option.array ? Array.isArray(value) && value.every((v) => typeof v === option.type) : typeof value === option.type;
    if (!expected) throw new UsageError(`--${name} ${String(value)}: expected ${option.array ? 'values' : 'a value'} of type ${option.type}`);
    Object.assign(o, { [option.override]: value });
  }
  return o;
}

/** Declares RUN_OPTIONS on a yargs parser (for `run`'s help and its strict check). */
export function declareRunOptions<T>(y: Argv<T>): Argv<T> {
  for (const [name, o] of Object.entries(RUN_OPTIONS) as [string, RunOption][]) {
    y.option(name, { type: o.type, describe: o.describe, ...(o.alias ? { alias: o.alias } : {}), ...(o.array ? { array: true } : {}), ...(o.default === undefined ? {} : { default: o.default }) });
  }
  return y;
}

/**
 * `dstack run`'s argv (after `run`) as runCommand takes it: split, then dstack's own options parsed
 * by yargs from RUN_OPTIONS. The workflow is undefined when none is named.
 */
export function parseRunArgv(argv: string[]): { workflow: string | undefined; options: Omit<RunOptions, 'workflow'> } {
  const split = splitRunArgv(argv);
  const a = declareRunOptions(yargs(split.options))
    // The global flags that splitRunArgv lets through.
    .option('debug', { type: 'boolean' })
    .option('help', { alias: 'h', type: 'boolean' })
    .strict()
    .help(false)
    .version(false)
    .fail((msg, err) => {
      throw err ?? new UsageError(msg);
    })
    .parseSync();
  return {
    workflow: split.workflow,
    options: {
      args: split.args,
      detach: a.detach === true,
      dryRun: a['dry-run'] === true,
      tag: typeof a.tag === 'string' ? a.tag : undefined,
      force: a.force === true,
      useCache: a.cache !== false,
      overrides: overridesFrom(a),
      overrideArgv: split.overrides,
    },
  };
}
