/**
 * Runs inside a network namespace (test/e2e/imds-block.e2e.test.ts) where 169.254.169.254 is on lo
 * and ami/job-imds-block.sh has rejected the job user's connections to it. Serves a fake IMDS there,
 * runs the same job through the agent's Attempt as the job user and as the agent's user (root),
 * with and without the bwrap sandbox, and prints what each saw as one JSON line.
 *   node --import tsx test/support/imds-block-probe.ts DIR JOB_USER_NAME
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { Attempt } from '../../agent/attempt.js';
import { Imds } from '../../agent/imds.js';
import { lookupJobUser, type JobUser } from '../../agent/job-user.js';
import { detectSandbox, type Sandbox } from '../../agent/sandbox.js';
import { jsonLogger } from '../../common/log.js';
import { parseLogChunk } from '../../common/log-records.js';
import { LocalStore } from '../../common/local/local-store.js';
import { runKeys } from '../../common/runs.js';
import type { JobSpec } from '../../common/spec/job-spec.js';
import { bashSpec } from './job-spec.js';
import { ImdsServer } from './imds-server.js';

/** Asks IMDS for a session token over bash's /dev/tcp, as any program in a job could. */
const JOB = [
  'echo "uid=$(id -u)"',
  `{ printf 'PUT /latest/api/token HTTP/1.0\\r\\nX-aws-ec2-metadata-token-ttl-seconds: 60\\r\\n\\r\\n' >&3; head -n1 <&3 | tr -d '\\r'; } 3<>/dev/tcp/169.254.169.254/80 || echo "imds: refused"`,
];

function spec(runName: string): JobSpec {
  return bashSpec(JOB, { repoId: 'local/probe', runName });
}

async function runJob(dir: string, store: LocalStore, runName: string, o: { user?: JobUser; sandbox?: Sandbox }): Promise<string> {
  const attempt = new Attempt({
    store,
    spec: spec(runName),
    attempt: 1,
    jobDir: join(dir, 'work', runName),
    jobEnv: { PATH: '/usr/local/bin:/usr/bin:/bin' },
    venvRoot: join(dir, 'venvs'),
    stopGraceMs: 1000,
    tickMs: 100,
    artifactSyncMs: 60_000,
    signal: new AbortController().signal,
    log: jsonLogger(() => undefined, { agentId: 'probe' }),
    ...(o.user ? { jobUser: o.user } : {}),
    ...(o.sandbox ? { sandbox: o.sandbox } : {}),
  });
  const result = await attempt.run();
  const chunks = await store.list(runKeys.logs('local/probe', runName));
  const records = (await Promise.all(chunks.map(async (c) => parseLogChunk((await store.get(c.key)) ?? Buffer.alloc(0)).records))).flat();
  const out = Buffer.concat(records.filter((r) => r.s === 'out').map((r) => r.d)).toString('utf8');
  return result.outcome === 'ended' && result.final.status === 'done' ? out : `${out}(attempt: ${JSON.stringify(result)})`;
}

async function main(): Promise<void> {
  const [dir, userName] = process.argv.slice(2);
  if (!dir || !userName) throw new Error('usage: imds-block-probe.ts DIR JOB_USER_NAME');
  const server = new ImdsServer('i-0probe', null);
  const url = await server.start('169.254.169.254', 80);
  try {
    const store = new LocalStore(join(dir, 'store'));
    const user = await lookupJobUser(userName);
    const hidden = { hidden: [join(dir, 'store')], readOnly: [] };
    const sandbox = await detectSandbox('auto', process.env.PATH ?? '', hidden, user);
    const rootSandbox = await detectSandbox('auto', process.env.PATH ?? '', hidden);
    const report = {
      agent: await new Imds(url).get('latest/meta-data/instance-id'),
      jobUser: await runJob(dir, store, 'as-job-user', { user }),
      agentUser: await runJob(dir, store, 'as-agent-user', {}),
      jobUserSandboxed: sandbox ? await runJob(dir, store, 'as-job-user-sandboxed', { user, sandbox }) : null,
      agentUserSandboxed: rootSandbox ? await runJob(dir, store, 'as-agent-user-sandboxed', { sandbox: rootSandbox }) : null,
      // The rule for containers (forwarded traffic, no owner): what docker's DOCKER-USER chain holds.
      dockerUser: execFileSync('iptables', ['-w', '-S', 'DOCKER-USER'], { encoding: 'utf8' }),
    };
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } finally {
    await server.stop();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
