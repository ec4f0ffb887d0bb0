#!/usr/bin/env node
import { arch, cpus, hostname, homedir, platform, totalmem } from 'node:os';
import { toolVersion } from '../common/version.js';
import { join } from 'node:path';
import pRetry from 'p-retry';
import { loadConfig, parseConfig, type DstackConfig } from '../common/config.js';
import { ConfigError, toError } from '../common/errors.js';
import { jsonLogger } from '../common/log.js';
import { openBackend } from '../common/backend.js';
import { GC_GRACE_MS, collectGarbage, localTargets } from '../common/gc.js';
import { orphanGraceMs } from '../common/orphans.js';
import { Agent } from './worker.js';
import { baseEnv } from './environment.js';
import { detectSandbox } from './sandbox.js';
import { agentFolders, asJobUser, jobUserFor } from './job-user.js';
import { Imds } from './imds.js';
import { watchSpot } from './spot-watch.js';
import { dockerClient, removeLeftovers } from './runtime/docker.js';
import { MachineGpuPool } from './gpus.js';
import { describeGpus, listGpus } from '../common/gpus.js';
import type { InstanceFacts } from '../common/runs.js';

/**
 * Where the agent's config comes from: `<DSTACK_HOME>/config.yaml` (DSTACK_AGENT_CONFIG=file, the
 * default) or the instance's EC2 user-data (DSTACK_AGENT_CONFIG=user-data, as the AMI's unit starts
 * it); the DSTACK_AWS_* environment overrides apply to both. On EC2 the agent id defaults to the instance id.
 */
async function agentConfig(home: string, env: NodeJS.ProcessEnv): Promise<{ config: DstackConfig; imds: Imds | null; instanceId: string | null }> {
  const source = env.DSTACK_AGENT_CONFIG ?? 'file';
  const imdsUrl = env.DSTACK_IMDS_URL ?? (source === 'user-data' ? 'http://169.254.169.254' : undefined);
  const imds = imdsUrl ? new Imds(imdsUrl) : null;
  // IMDS can lag the first seconds after boot: retry before giving up.
  const fetchItem = (path: string): Promise<string | null> => (imds ? pRetry(() => imds.get(path), { retries: 5, minTimeout: 200 }) : Promise.resolve(null));
  const instanceId = imds ? await fetchItem('latest/meta-data/instance-id') : null;
  if (source === 'file') return { config: await loadConfig(home, env), imds, instanceId };
  if (source !== 'user-data') throw new ConfigError(`DSTACK_AGENT_CONFIG must be \`file\` or \`user-data\`, not \`${source}\``);
  const userData = await fetchItem('latest/user-data');
  if (userData === null) throw new ConfigError(`this instance has no user-data at ${imdsUrl}: launch it with the dstack config YAML as user-data`);
  return { config: parseConfig(userData, 'EC2 user-data', home, env), imds, instanceId };
}

/** Which instance this is, for the attempt records (and so `ps`). */
async function instanceFacts(imds: Imds, id: string): Promise<InstanceFacts> {
  const [type, lifecycle] = await Promise.all([imds.get('latest/meta-data/instance-type'), imds.get('latest/meta-data/instance-life-cycle')]);
  return { id, type: type ?? '?', market: lifecycle === 'spot' ? 'spot' : 'on-demand' };
}

/** The agent's composition root: reads config and environment, wires the transports, handles signals. */
async function main(): Promise<number> {
  const home = process.env.DSTACK_HOME ?? join(homedir(), '.dstack');
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const { config, imds, instanceId } = await agentConfig(home, process.env);
  const agentId = process.env.DSTACK_AGENT_ID ?? instanceId ?? `agent-${process.pid}`;
  const log = jsonLogger((line) => process.stdout.write(line), { agentId });
  // Read only: the agent reads a job's secrets by name and never lists or writes them.
  const backend = await openBackend(config, { awsSecrets: async (aws) => (await import('../common/aws/secrets-reader.js')).openSecretsReader(aws) });
  const startedAt = new Date().toISOString();
  const setState = (state: 'idle' | 'busy'): Promise<void> =>
    backend.registry.write({ id: agentId, pid: process.pid, state, startedAt }).catch(() => undefined);
  const instance = imds && instanceId ? await instanceFacts(imds, instanceId) : undefined;
  // On the agent image, jobs run as an unprivileged user that the firewall keeps off IMDS (no instance role).
  const jobUser = await jobUserFor(process.env.DSTACK_JOB_USER, config.aws?.jobInstanceRole ?? false, process.getuid?.());
  if (process.env.DSTACK_JOB_USER) {
    log.log('info', jobUser ? `jobs run as ${jobUser.name} (uid ${jobUser.uid}), without the instance role` : 'jobs run as the agent\'s user, with the instance role (aws.jobInstanceRole)');
  }
  // Only the clean base (PATH, HOME, locale, proxy) of the agent's own environment reaches jobs.
  const jobEnv = asJobUser(baseEnv(process.env), jobUser);

  const workRoot = join(backend.root, 'work', agentId);
  const venvRoot = join(backend.root, 'venvs');
  // coordinator/capability.ts looks here too, for the submit-time check of `python:`.
  const condaRoot = join(backend.root, 'conda');
  // The job user passes through to its job's folder and venv, and lists none of the agent's folders.
  if (jobUser) await agentFolders(backend.root, workRoot, venvRoot);
  // The job sees neither the agent's credentials and state nor other jobs' folders; the venvs for `requirements` stay readable.
  const hidden = { hidden: [join(homedir(), '.aws'), join(homedir(), '.ssh'), home, join(backend.root, 'work')], readOnly: [venvRoot, condaRoot] };
  const sandbox = await detectSandbox(config.local.sandbox, process.env.PATH ?? '', hidden, jobUser);
  log.log('info', sandbox ? `jobs run in a sandbox (${sandbox.bwrap})` : `jobs run without a sandbox (local.sandbox: ${config.local.sandbox}${config.local.sandbox === 'auto' ? ', bwrap not found or not working' : ''})`);
  // Found once: nvidia-smi on the agent's PATH. The agents of this machine share the claims under the backend's root.
  const gpus = await listGpus(process.env.PATH ?? '');
  log.log('info', gpus.length > 0 ? `GPUs: ${describeGpus(gpus)}` : 'no GPU (no nvidia-smi on PATH, or it lists none)');
  const gpuPool = new MachineGpuPool({ gpus, dir: join(backend.root, 'gpus'), pid: process.pid, host: hostname() });
  // On EC2, `dstack ssh` and the forwards to a job's ports go through the agent's SSH endpoint.
  const sshPort = config.aws?.sshPort ?? 0;
  const ssh = imds && config.backend === 'aws' && sshPort > 0 ? await (await import('./ssh-wiring.js')).startSshEndpoint({ home, imds, port: sshPort, log, ...(jobUser ? { user: jobUser } : {}) }) : undefined;
  // `provider: docker`: the containers an earlier agent here left behind (killed, say) go first.
  const docker = await dockerClient(process.env);
  if (docker) await removeLeftovers(docker, agentId, hostname(), log);
  const agent = new Agent({
    ...(docker ? { docker } : {}),
    // With `aws.agents: local` this is the queue of the agent's owner (the ARN of its credentials).
    queue: await backend.queueFor('default'),
    store: backend.store,
    log,
    agentId,
    host: hostname(),
    workRoot,
    venvRoot,
    condaRoot,
    ...(sandbox ? { sandbox } : {}),
    ...(jobUser ? { jobUser } : {}),
    visibilityMs: config.local.visibilityTimeoutSec * 1000,
    heartbeatMs: Math.max(200, (config.local.visibilityTimeoutSec * 1000) / 3),
    tickMs: 250,
    stopGraceMs: config.local.stopGraceSec * 1000,
    ...(config.local.codeServer !== undefined ? { codeServer: config.local.codeServer } : {}),
    idleTimeoutMs: config.local.agentIdleTimeoutSec * 1000,
    maxAttempts: config.local.maxAttempts,
    jobEnv,
    ...(backend.secrets ? { secrets: backend.secrets } : {}),
    gpuPool,
    onState: setState,
    ...(ssh ? { ssh } : {}),
    ...(instance ? { instance } : {}),
    artifactSyncMs: config.local.artifactSyncSec * 1000,
    hostFacts: {
      hostname: hostname(),
      platform: platform(),
      arch: arch(),
      cpus: cpus().length,
      memoryMiB: Math.round(totalmem() / 2 ** 20),
      nodeVersion: process.version,
      agentVersion: toolVersion(import.meta.url),
    },
  });
  let signals = 0;
  const onSignal = (): void => {
    signals += 1;
    if (signals === 1) {
      log.log('info', 'draining: finishing the current job, taking no new ones');
      agent.drain();
    } else {
      log.log('warn', 'forced stop: handing the current job back to the queue');
      agent.force();
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  await setState('idle');
  await collectGarbage({ store: backend.store, ...localTargets(backend), orphanGraceMs: orphanGraceMs(config), storeEveryMs: GC_GRACE_MS, dryRun: false }).then(
    (r) => log.log('info', 'gc at start', { removed: r.removed.length, freedBytes: r.removed.reduce((n, x) => n + x.sizeBytes, 0), settled: r.settled, notes: r.notes }),
    (e: unknown) => log.log('warn', 'gc at start failed', { error: toError(e).message }),
  );
  const stopWatch = imds
    ? watchSpot({ imds, log, intervalMs: 5000, onNotice: (reason) => agent.interrupt(reason), onRebalance: () => agent.drain() })
    : () => undefined;
  try {
    await agent.run();
  } finally {
    stopWatch();
    await ssh?.close();
    await backend.registry.remove(agentId);
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`${JSON.stringify({ t: new Date().toISOString(), level: 'error', msg: toError(e).message })}\n`);
    process.exit(1);
  },
);
