#!/usr/bin/env node
import { arch, cpus, hostname, homedir, platform, totalmem } from 'node:os';
import { toolVersion } from '../common/version.js';
import { join } from 'node:path';
import { loadConfig } from '../common/config.js';
import { toError } from '../common/errors.js';
import { jsonLogger } from '../common/log.js';
import { openBackend } from '../common/backend.js';
import { Agent } from './worker.js';

/** The agent's composition root: reads config and environment, wires the transports, handles signals. */
async function main(): Promise<number> {
  const home = process.env.DSTACK_HOME ?? join(homedir(), '.dstack');
  const agentId = process.env.DSTACK_AGENT_ID ?? `agent-${process.pid}`;
  const log = jsonLogger((line) => process.stdout.write(line), { agentId });
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const config = await loadConfig(home, process.env);
  const backend = await openBackend(config);
  const startedAt = new Date().toISOString();
  const setState = (state: 'idle' | 'busy'): Promise<void> =>
    backend.registry.write({ id: agentId, pid: process.pid, state, startedAt }).catch(() => undefined);
  const jobEnv: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DSTACK_') && v !== undefined) jobEnv[k] = v;

  const agent = new Agent({
    queue: backend.queue,
    store: backend.store,
    log,
    agentId,
    host: hostname(),
    workRoot: join(backend.root, 'work', agentId),
    visibilityMs: config.local.visibilityTimeoutSec * 1000,
    heartbeatMs: Math.max(200, (config.local.visibilityTimeoutSec * 1000) / 3),
    tickMs: 250,
    stopGraceMs: config.local.stopGraceSec * 1000,
    idleTimeoutMs: config.local.agentIdleTimeoutSec * 1000,
    maxAttempts: config.local.maxAttempts,
    jobEnv,
    onState: setState,
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
  try {
    await agent.run();
  } finally {
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
