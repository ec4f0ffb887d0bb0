import { expect } from 'chai';
import { agentUserData } from '../../common/fleet/user-data.js';
import { profileIdOf } from '../../common/fleet/match.js';
import { followRun } from '../../coordinator/follow.js';
import { psCommand } from '../../coordinator/commands/ps.js';
import { repoInfo } from '../../coordinator/code-capture.js';
import { makeRepo, removeAll, tempDir, waitFor } from '../support/cli.js';
import { coordinatorContext, reconcileLoop, submit, waitForRun } from '../support/coordinator.js';
import { startEmulator, uniqueName, type Emulator } from '../support/fauxqs.js';
import { checkpointingWorkflow, FleetSimulator } from '../support/fleet-sim.js';

const WORKFLOWS = `workflows:
${checkpointingWorkflow(12, true)}  - name: sleepy
    provider: bash
    commands: [echo begin, sleep 6, echo end]
  - name: poison
    provider: bash
    commands:
      - echo "taking the agent down"
      # The agent is the nearest node above the job's shell (under the local sandbox, bwrap is between).
      - p=$PPID; while [ "$(cat /proc/$p/comm)" != node ]; do p=$(cut -d' ' -f4 /proc/$p/stat); done; kill -9 $p
  - name: hello
    provider: bash
    commands: [echo hello]
  - name: nap
    provider: bash
    commands: [sleep 3]
  - name: gpu-nap
    provider: bash
    commands: [sleep 3]
    resources:
      gpu: 1
`;

const configYaml = (endpoint: string, bucket: string, prefix: string): string => `backend: aws
aws:
  region: us-east-1
  bucket: ${bucket}
  queuePrefix: ${prefix}
  endpoints: { sqs: "${endpoint}", s3: "${endpoint}", sts: "${endpoint}" }
  agents: ec2
  maxInstances: 3
local:
  visibilityTimeoutSec: 3
  agentIdleTimeoutSec: 4
  stopGraceSec: 2
  maxAttempts: 3
`;

describe('e2e: EC2 fleet on a simulator (fauxqs, agents booted from user-data, IMDS per instance)', function () {
  this.timeout(120_000);
  let emulator: Emulator;
  let repo: string;
  let home: string;
  let sim: FleetSimulator;
  let ctx: Awaited<ReturnType<typeof coordinatorContext>>;

  before(async () => {
    emulator = await startEmulator();
    repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
    home = tempDir('fleethome');
    const yaml = configYaml(emulator.endpoint, uniqueName('fleet'), uniqueName('f'));
    sim = new FleetSimulator({
      userData: (profileId) => agentUserData(ctx.config, profileId),
      maxInstances: 3,
      env: { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1' },
    });
    ctx = await coordinatorContext({ configYaml: yaml, home, cwd: repo, compute: sim });
  });
  afterEach(async function () {
    // What the agents said, when a scenario fails: CI shows it.
    if (this.currentTest?.state === 'failed') for (const i of sim.launched) process.stderr.write(`--- ${i.id} (${i.profileId})\n${i.output}`);
    // Every scenario starts from an empty fleet.
    await sim.shutdown();
  });
  after(async () => {
    await sim.shutdown();
    await emulator.stop();
    removeAll(repo, home);
  });

  const logsOf = async (run: string): Promise<string> => {
    const { repoId } = await repoInfo(repo);
    let text = '';
    await followRun(ctx.store, repoId, run, { follow: false, pollMs: 50, onRecord: (r) => (text += r.d) });
    return text;
  };

  it('scenario 1: a spot notice checkpoints the job, an idle agent resumes it from the checkpoint, and it finishes', async () => {
    const run = await submit(ctx, 'train');
    const first = await waitFor(() => sim.launched[0], 10_000, 'an instance for the backlog');
    expect(first.market).to.equal('spot');
    await waitFor(async () => ((await logsOf(run)).includes('step 4') ? true : undefined), 30_000, 'step 4');
    // ps, per job: status, attempt N of M, instance id, type and market, heartbeat age, cost so far.
    const before = ctx.out.text().length;
    expect(await psCommand(ctx, { run: undefined, all: false, json: false })).to.equal(0);
    const table = ctx.out.text().slice(before).split('\n');
    expect(table[0]?.split(/\s{2,}/)).to.deep.equal(['RUN', 'WORKFLOW', 'SUBMITTED', 'STATUS', 'ATTEMPT', 'INSTANCE', 'HEARTBEAT', 'COST', 'REASON']);
    const row = table.find((l) => l.startsWith(run))?.split(/\s{2,}/) ?? [];
    expect(row.slice(1, 6)).to.deep.equal(['train', row[2], 'Running', '1 of 3', `${first.id} (sim.cpu spot)`]);
    expect(row[6]).to.match(/^(now|\d secs ago)$/);
    // 0.1 $/h for about five seconds.
    expect(Number(row[7]?.slice(1))).to.be.within(0.00005, 0.001);
    // A second, idle agent of the same profile is waiting when the notice comes.
    const idle = await sim.launch(await ctx.compute.plan({ interruptible: true, local: false }));
    await waitFor(() => (idle.output.includes('agent started') ? true : undefined), 10_000, 'the idle agent');
    sim.injectSpotNotice(first.id);
    const done = await waitForRun(ctx.store, repo, run, (v) => v.status === 'done' || v.status === 'failed', 60_000, 'the run to end');
    expect(done.status, JSON.stringify(done.final)).to.equal('done');
    expect(done.attempts.map((a) => a.agentId)).to.deep.equal([first.id, idle.id]);
    expect(done.attempts[0]?.interruption).to.match(/^spot interruption notice \(terminate at /);
    expect(done.attempts[0]?.instance).to.deep.equal({ id: first.id, type: 'sim.cpu', market: 'spot' });
    const logs = await logsOf(run);
    const starts = [...logs.matchAll(/^starting at step (\d+)$/gm)].map((m) => Number(m[1]));
    expect(starts, logs).to.have.length(2);
    expect(starts[0]).to.equal(0);
    expect(starts[1], logs).to.be.at.least(4);
    expect(logs).to.match(/dstack: resuming: restored ckpt \(1 files\)/);
    // Not started over: every step ran once, except at most the one cut by the notice.
    const steps = logs.match(/^step \d+$/gm) ?? [];
    expect(steps.length).to.be.within(12, 13);
    expect(steps[steps.length - 1]).to.equal('step 12');
  });

  it('scenario 2: an instance killed silently: its job is redelivered after the visibility timeout and finished elsewhere', async () => {
    const loop = reconcileLoop(ctx, 500);
    try {
      const run = await submit(ctx, 'sleepy');
      const v = await waitForRun(ctx.store, repo, run, (x) => x.status === 'running', 20_000, 'the job to run');
      const holder = v.attempts[0]?.agentId ?? '';
      sim.silentKill(holder);
      const done = await waitForRun(ctx.store, repo, run, (x) => x.status === 'done' || x.status === 'failed', 60_000, 'the run to end');
      expect(done.status).to.equal('done');
      expect(done.attempts).to.have.length(2);
      expect(done.attempts[1]?.agentId).to.not.equal(holder);
      expect(await logsOf(run)).to.match(/begin\nend\n$/);
    } finally {
      await loop.stop();
    }
  });

  it('scenario 3: a poison job fails after 3 attempts with its reason and goes to the DLQ; the agent serves the next job', async () => {
    const loop = reconcileLoop(ctx, 500);
    try {
      const run = await submit(ctx, 'poison');
      const failed = await waitForRun(ctx.store, repo, run, (x) => x.status === 'failed', 90_000, 'the poison run to fail');
      expect(failed.final?.reason).to.match(/^gave up after 3 attempts: /);
      expect(failed.attempts).to.have.length(3);
      const queue = await ctx.queueFor(profileIdOf({ interruptible: false, local: false }));
      // The agent records the failure, then moves the message.
      await waitFor(async () => ((await queue.counts()).dead === 1 ? true : undefined), 10_000, 'the message in the DLQ');
      const survivor = sim.launched.find((i) => i.output.includes('moving it to the dead-letter queue'));
      expect(survivor, 'the agent that dead-lettered it').to.not.equal(undefined);
      const next = await submit(ctx, 'hello');
      const done = await waitForRun(ctx.store, repo, next, (x) => x.status === 'done', 20_000, 'the next job');
      expect(done.attempts[0]?.agentId).to.equal(survivor?.id);
    } finally {
      await loop.stop();
    }
  });

  it('scenario 4: capacity follows the backlog per profile, within the maximum, and goes back to zero when idle', async () => {
    // Four CPU jobs and one GPU job; at most 3 instances. The GPU job gets its own instance at once.
    const before = sim.launched.length;
    const runs = [await submit(ctx, 'gpu-nap')];
    for (let i = 0; i < 4; i++) runs.push(await submit(ctx, 'nap'));
    const cpu = profileIdOf({ interruptible: false, local: false });
    const gpu = profileIdOf({ interruptible: false, local: false, gpu: { count: 1 } });
    const byProfile = (p: string): number => [...sim.instances.values()].filter((i) => i.profileId === p).length;
    expect(sim.instances.size).to.equal(3);
    expect(byProfile(gpu)).to.equal(1);
    expect(byProfile(cpu)).to.equal(2);
    const loop = reconcileLoop(ctx, 500);
    try {
      for (const run of runs) await waitForRun(ctx.store, repo, run, (x) => x.status === 'done', 60_000, `run ${run}`);
      // Three at once, and at most one more when the GPU instance idled out while CPU jobs still waited.
      expect(sim.launched.length - before).to.be.within(3, 4);
      // Idle agents end their instances; with no backlog nothing is launched again.
      await waitFor(() => (sim.instances.size === 0 ? true : undefined), 30_000, 'the fleet to scale to zero');
      const launched = sim.launched.length;
      // Two whole reconcile passes that saw no backlog.
      const seen = loop.passes();
      await waitFor(() => (loop.passes() >= seen + 2 ? true : undefined), 10_000, 'two more reconcile passes');
      expect(sim.instances.size).to.equal(0);
      expect(sim.launched.length).to.equal(launched);
    } finally {
      await loop.stop();
    }
  });
});
