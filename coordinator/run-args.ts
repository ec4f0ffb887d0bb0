import { UsageError } from '../common/errors.js';

/** `dstack run`'s own options: the ones that take a value, and the flags. */
const VALUE_OPTIONS = new Set([
  '-t', '--tag', '-e', '--env', '-a', '--artifact', '--dep', '-w', '--working-dir',
  '--cpu', '--memory', '--gpu', '--gpu-name', '--gpu-memory', '--shm-size',
]);
const FLAG_OPTIONS = new Set(['-d', '--detach', '--dry-run', '--debug', '-h', '--help', '-i', '--interruptible', '--no-cache']);

/** The options that change what runs, kept in the run record as typed. */
export const OVERRIDE_OPTIONS = new Set([
  '-e', '--env', '-a', '--artifact', '--dep', '-w', '--working-dir',
  '--cpu', '--memory', '--gpu', '--gpu-name', '--gpu-memory', '--shm-size', '-i', '--interruptible',
]);

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
 * Splits `run [OPTIONS] WORKFLOW [OPTIONS] [ARGS...]` as 0.0.14 did: dstack's options may come on
 * either side of the workflow name; the first token after it that is not one of them starts ARGS
 * (and so does `--`).
 */
export function splitRunArgv(argv: string[]): SplitRun {
  const options: string[] = [];
  const overrides: string[] = [];
  let workflow: string | undefined;
  let i = 0;
  const takeOption = (): boolean => {
    const token = argv[i] ?? '';
    const name = token.includes('=') ? token.slice(0, token.indexOf('=')) : token;
    const sink = OVERRIDE_OPTIONS.has(name) ? [options, overrides] : [options];
    if (FLAG_OPTIONS.has(name)) {
      for (const s of sink) s.push(token);
      i += 1;
      return true;
    }
    if (VALUE_OPTIONS.has(name)) {
      for (const s of sink) s.push(token);
      if (!token.includes('=')) {
        if (i + 1 >= argv.length) throw new UsageError(`${token} needs a value`);
        for (const s of sink) s.push(argv[i + 1] ?? '');
        i += 1;
      }
      i += 1;
      return true;
    }
    return false;
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
