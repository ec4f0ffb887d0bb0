#!/usr/bin/env node
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline/promises';
import { loadConfig } from '../common/config.js';
import { DstackError, UsageError, errnoCode, toError } from '../common/errors.js';
import { ExternalAgents, LocalCompute } from '../common/local/local-compute.js';
import type { Compute } from '../common/ports.js';
import { openBackend } from '../common/backend.js';
import { creatingQueueFor, provisionBackend } from '../common/provision.js';
import type { Context } from './context.js';
import { consoleOutput, type Output } from './output.js';
import type { ConfigContext } from './commands/config.js';
import { buildCli } from './cli.js';
import { toolVersion } from '../common/version.js';
import { readSecretValue } from './secret-input.js';

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

/** Ctrl-C while a command runs ends it gracefully (attached runs detach); once the command is done, Ctrl-C kills as usual. */
let detachOnSigint: (() => void) | undefined;

async function makeContext(out: Output): Promise<Context> {
  const home = process.env.DSTACK_HOME ?? join(homedir(), '.dstack');
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const config = await loadConfig(home, process.env);
  const backend = await openBackend(config, { awsSecrets: async (aws) => (await import('../common/aws/secrets-manager.js')).openSecretsManager(aws) });
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
  const interrupted = new Promise<void>((resolve) => process.once('SIGINT', (detachOnSigint = () => resolve())));
  const confirm = async (question: string, yes: boolean): Promise<boolean> => {
    if (yes) return true;
    if (!process.stdin.isTTY) throw new UsageError(`${question} Add -y to confirm (stdin is not a terminal).`);
    return /^y(es)?$/i.test(await askLine(`${question} [y/N] `));
  };
  return {
    config,
    queueFor: creatingQueueFor(config, backend),
    store: backend.store,
    owner: backend.owner,
    gcTargets: async () => (await import('../common/gc.js')).localTargets(backend),
    ...(backend.secrets ? { secrets: backend.secrets } : {}),
    readSecret: (prompt) => readSecretValue(process.stdin, process.stderr, prompt),
    compute,
    out,
    cwd: process.cwd(),
    toolVersion: toolVersion(import.meta.url),
    shellEnv: { ...process.env },
    interrupted,
    confirm,
  };
}

/** This machine's public address as `url` sees it (AWS's checkip answers it alone, in text). */
async function publicAddress(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) }).catch((e: unknown) => {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new Error(`${url}: ${cause?.code ?? cause?.message ?? toError(e).message}`);
  });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return (await res.text()).trim();
}

/** What `dstack config` needs: the home, the terminal and a check that the new config opens. */
function configContext(out: Output): ConfigContext {
  const home = process.env.DSTACK_HOME ?? join(homedir(), '.dstack');
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const ask = process.stdin.isTTY
    ? async (question: string, fallback: string): Promise<string> => (await askLine(`${question}${fallback ? ` [${fallback}]` : ''}: `)) || fallback
    : undefined;
  return {
    home,
    out,
    env: process.env,
    ...(ask ? { ask } : {}),
    check: (config) => provisionBackend(config),
    publicAddress: () => publicAddress(process.env.DSTACK_CHECKIP_URL ?? 'https://checkip.amazonaws.com'),
  };
}

/**
 * A reader that closes the pipe early (`dstack logs RUN | head -1`) wants no more output: the CLI
 * ends at once and quietly, as a program killed by SIGPIPE does, with the code it has so far.
 */
function endOnBrokenPipe(stream: NodeJS.WriteStream): void {
  stream.on('error', (e: unknown) => {
    if (errnoCode(e) !== 'EPIPE') process.exitCode = 1;
    process.exit();
  });
}

async function main(argv: string[]): Promise<number> {
  const out = consoleOutput(process.stdout, process.stderr);
  const debug = argv.includes('--debug');
  try {
    const cli = buildCli(argv, {
      out,
      cwd: process.cwd(),
      version: toolVersion(import.meta.url),
      context: () => makeContext(out),
      configContext: () => configContext(out),
      terminated: () => new Promise<void>((resolve) => process.once('SIGTERM', () => resolve())),
    });
    return await cli.parse();
  } catch (e) {
    const err = toError(e);
    if (debug) out.note(err.stack ?? err.message);
    else out.note(err instanceof DstackError ? err.message : `dstack: ${err.message}`);
    return err instanceof UsageError ? 2 : 1;
  }
}

endOnBrokenPipe(process.stdout);
endOnBrokenPipe(process.stderr);
// The process ends when the event loop is empty, that is once stdout and stderr have drained.
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    if (detachOnSigint) process.off('SIGINT', detachOnSigint);
  },
  (e: unknown) => {
    process.stderr.write(`dstack: ${toError(e).message}\n`);
    process.exitCode = 1;
  },
);
