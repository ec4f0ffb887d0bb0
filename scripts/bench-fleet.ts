// Spot notice to running again: on fauxqs, with the fleet simulator from test/support (agents booted
// from user-data, an IMDS server each), as the fleet scenarios in npm test run them.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startFauxqs } from 'fauxqs';
import { agentUserData } from '../common/fleet/user-data.js';
import { followRun } from '../coordinator/follow.js';
import { repoInfo } from '../coordinator/code-capture.js';
import { coordinatorContext, submit } from '../test/support/coordinator.js';
import { checkpointingWorkflow, FleetSimulator } from '../test/support/fleet-sim.js';
import { runKeys, type StopRequest } from '../common/runs.js';

const WORKFLOWS = `workflows:
${checkpointingWorkflow(600, false)}`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until<T>(fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('bench: timed out');
    await sleep(50);
  }
}

/** Spot notice to the job's first output on the idle agent, against enqueue to first output on an idle agent. */
export async function benchFleet(dir: string, reps: number): Promise<string[]> {
  process.env.AWS_ACCESS_KEY_ID ??= 'test';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'test';
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const server = await startFauxqs({ port: 0, logger: false, host: '127.0.0.1' });
  const repo = join(dir, 'repo');
  mkdirSync(join(repo, '.dstack'), { recursive: true });
  writeFileSync(join(repo, '.dstack', 'workflows.yaml'), WORKFLOWS);
  for (const args of [['init', '-q'], ['add', '-A'], ['-c', 'user.name=b', '-c', 'user.email=b@b', 'commit', '-qm', 'bench']]) execFileSync('git', args, { cwd: repo, stdio: 'ignore' });
  // A fresh queue prefix per repetition: fauxqs hands messages to the open long polls of agents killed
  // in the previous one, which would hide a released job for a lease.
  const yaml = (rep: number): string => `backend: aws\naws:\n  region: us-east-1\n  bucket: bench-fleet\n  queuePrefix: bench${rep}\n  endpoints: { sqs: "${server.address}", s3: "${server.address}", sts: "${server.address}" }\n  agents: ec2\n  maxInstances: 8\nlocal:\n  visibilityTimeoutSec: 10\n  agentIdleTimeoutSec: 120\n  stopGraceSec: 2\n`;
  let ctx: Awaited<ReturnType<typeof coordinatorContext>>;
  const sim: FleetSimulator = new FleetSimulator({ userData: (id) => agentUserData(ctx.config, id), maxInstances: 8, env: { AWS_REGION: 'us-east-1' } });
  const { repoId } = await repoInfo(repo);
  const firstOutputOf = async (run: string, attempt: number): Promise<number | undefined> => {
    // Each attempt prints one "starting at step" line first; its time is when the agent read it.
    const starts: number[] = [];
    await followRun(ctx.store, repoId, run, { follow: false, pollMs: 50, onRecord: (r) => void (r.d.includes('starting at step') && starts.push(r.atMs)) });
    return starts[attempt - 1];
  };
  const notice: number[] = [];
  const fresh: number[] = [];
  try {
    const placement = await sim.plan({ interruptible: true, local: false });
    for (let i = 0; i < reps; i++) {
      ctx = await coordinatorContext({ configYaml: yaml(i), home: join(dir, 'home'), cwd: repo, compute: sim });
      // The agent only opens its profile's queue: `run` creates it with the profile's first job, so here it is made first.
      await ctx.queueFor(placement.profileId, { create: true });
      // Baseline: an idle agent takes a newly submitted job.
      const a = await sim.launch(placement);
      await until(async () => (a.output.includes('agent started') ? true : undefined), 20_000);
      const t0 = Date.now();
      const run = await submit(ctx, 'train');
      fresh.push((await until(() => firstOutputOf(run, 1), 30_000)) - t0);
      // The measured case: a notice on the busy instance, another agent idle.
      const b = await sim.launch(placement);
      await until(async () => (b.output.includes('agent started') ? true : undefined), 20_000);
      await sleep(1500);
      const t1 = Date.now();
      sim.injectSpotNotice(a.id);
      notice.push((await until(() => firstOutputOf(run, 2), 60_000)) - t1);
      await ctx.store.put(runKeys.stop(repoId, run), JSON.stringify({ abort: true, requestedAt: new Date().toISOString() } satisfies StopRequest));
      await until(async () => ((await ctx.store.get(runKeys.final(repoId, run))) ? true : undefined), 30_000);
      await sim.shutdown();
    }
  } catch (e) {
    for (const i of sim.launched) process.stderr.write(`--- ${i.id}\n${i.output}`);
    throw e;
  } finally {
    await sim.shutdown();
    await server.stop();
  }
  const med = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? NaN;
  const max = Math.max(...notice);
  return [
    `| spot notice to the job running again on an idle agent (median of ${reps}; max ${max} ms; goal 10 s) | ${med(notice)} ms | enqueue to running on an idle agent | ${med(fresh)} ms | ${(med(notice) / med(fresh)).toFixed(1)}x |`,
  ];
}

