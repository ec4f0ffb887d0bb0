import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GetQueueUrlCommand, SQSClient } from '@aws-sdk/client-sqs';
import { openBackend } from '../../common/backend.js';
import { loadConfig } from '../../common/config.js';
import { ownerQueueId } from '../../common/owner.js';
import { dstack, killAgents, makeRepo, removeAll, tempDir } from '../support/cli.js';
import { startEmulator, uniqueName, type Emulator } from '../support/fauxqs.js';
import { StsFake } from '../support/sts-fake.js';
import { SecretsManagerFake } from '../support/secrets-manager-fake.js';

const WORKFLOWS = `workflows:
  - name: whoami
    provider: bash
    commands:
      - env
  - name: sleeper
    provider: bash
    commands:
      - echo started
      - sleep 60
`;

const ALICE = 'arn:aws:iam::111122223333:user/alice';
const BOB = 'arn:aws:iam::111122223333:user/bob';
const nameOf = (text: string): string => /Run ([a-z]+-[a-z]+-\d+)/.exec(text)?.[1] ?? '';

interface PsJson {
  runName: string;
  owner: string | null;
  status: string;
  attempts: Array<{ agentId: string }>;
}

describe('e2e: two owners, one bucket (fauxqs, fake STS, agents: local)', function () {
  this.timeout(120_000);
  let emulator: Emulator;
  let sts: StsFake;
  const secretsManager = new SecretsManagerFake();
  let repo: string;
  const home = { a: '', b: '' };
  const env: { a: Record<string, string>; b: Record<string, string> } = { a: {}, b: {} };
  const as = (who: 'a' | 'b', args: string[]) => dstack(args, { cwd: repo, home: home[who], env: env[who] });
  const psJson = async (who: 'a' | 'b', run: string): Promise<PsJson> => {
    const r = await as(who, ['ps', run, '--json']);
    expect(r.code, r.stderr).to.equal(0);
    return (JSON.parse(r.stdout) as PsJson[])[0] as PsJson;
  };
  /** Whether the agent that ran an attempt was started from this home (its log lives there). */
  const agentOf = (who: 'a' | 'b', agentId: string): boolean => existsSync(join(home[who], 'local', 'logs', `${agentId}.log`));

  before(async () => {
    emulator = await startEmulator();
    sts = new StsFake({
      AKIAALICE: { arn: ALICE, userId: 'AIDAALICE', account: '111122223333' },
      AKIABOB: { arn: BOB, userId: 'AIDABOB', account: '111122223333' },
    });
    const stsEndpoint = await sts.start();
    const sm = await secretsManager.start();
    repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
    const bucket = uniqueName('dstack');
    const prefix = uniqueName('q');
    const base = { AWS_REGION: 'us-east-1' };
    env.a = { ...base, AWS_ACCESS_KEY_ID: 'AKIAALICE', AWS_SECRET_ACCESS_KEY: `alice-secret-${randomBytes(6).toString('hex')}`, A_ONLY_MARKER: `a-only-${randomBytes(6).toString('hex')}` };
    env.b = { ...base, AWS_ACCESS_KEY_ID: 'AKIABOB', AWS_SECRET_ACCESS_KEY: `bob-secret-${randomBytes(6).toString('hex')}` };
    for (const who of ['a', 'b'] as const) {
      home[who] = tempDir(`owner-${who}`);
      const c = await as(who, [
        'config', '--backend', 'aws', '--region', 'us-east-1', '--bucket', bucket, '--queue-prefix', prefix,
        '--sqs-endpoint', emulator.endpoint, '--s3-endpoint', emulator.endpoint, '--sts-endpoint', stsEndpoint, '--secretsmanager-endpoint', sm, '--agents', 'local',
      ]);
      expect(c.code, c.stderr).to.equal(0);
      const file = join(home[who], 'config.yaml');
      writeFileSync(file, readFileSync(file, 'utf8').replace('local:\n', 'local:\n  visibilityTimeoutSec: 5\n  agentIdleTimeoutSec: 60\n  stopGraceSec: 1\n'));
    }
  });
  after(async () => {
    await killAgents(home.a);
    await killAgents(home.b);
    removeAll(repo, home.a, home.b);
    await sts.stop();
    await secretsManager.stop();
    await emulator.stop();
  });

  it("each agent runs only its owner's jobs, B's job sees none of A's environment, and ps, stop and rm know whose run is whose", async () => {
    // A's job first: A's agent then waits, idle, for more work while B submits.
    const ra = await as('a', ['run', 'whoami']);
    expect(ra.code, ra.stderr).to.equal(0);
    const runA = nameOf(ra.stderr);
    expect(ra.stdout).to.contain(`RUN_NAME=${runA}`);
    const rb = await as('b', ['run', 'whoami']);
    expect(rb.code, rb.stderr).to.equal(0);
    const runB = nameOf(rb.stderr);
    expect(rb.stdout).to.contain(`RUN_NAME=${runB}`);

    // Each job ran on an agent its own owner's CLI started.
    const [viewA, viewB] = [await psJson('a', runA), await psJson('a', runB)];
    expect(viewA.owner).to.equal(ALICE);
    expect(viewB.owner).to.equal(BOB);
    const [agentA, agentB] = [viewA.attempts[0]?.agentId ?? '?', viewB.attempts[0]?.agentId ?? '?'];
    expect(agentOf('a', agentA), `A's run ${runA} ran on ${agentA}`).to.equal(true);
    expect(agentOf('b', agentB), `B's run ${runB} ran on ${agentB}`).to.equal(true);
    expect(agentOf('a', agentB), `B's run ${runB} ran on A's agent ${agentB}`).to.equal(false);
    // B's job saw nothing of A's environment, and no credentials at all.
    for (const value of [env.a.A_ONLY_MARKER, env.a.AWS_SECRET_ACCESS_KEY, 'AKIAALICE']) expect(rb.stdout).to.not.contain(value);
    expect(rb.stdout).to.not.match(/^AWS_/m);

    // ps from A shows both owners.
    const ps = await as('a', ['ps', '-a']);
    expect(ps.code, ps.stderr).to.equal(0);
    const lines = ps.stdout.split('\n');
    expect(lines[0]).to.match(/^RUN\s+WORKFLOW\s+OWNER\s+SUBMITTED/);
    expect(lines.find((l) => l.startsWith(runA))).to.match(new RegExp(`^${runA}\\s+whoami\\s+user/alice\\s`));
    expect(lines.find((l) => l.startsWith(runB))).to.match(new RegExp(`^${runB}\\s+whoami\\s+user/bob\\s`));

    // Restarting B's run makes a run of A's own, sent to A's queue.
    const re = await as('a', ['restart', runB]);
    expect(re.code, re.stderr).to.equal(0);
    const runR = nameOf(re.stderr);
    const viewR = await psJson('a', runR);
    expect(viewR.owner).to.equal(ALICE);
    expect(agentOf('a', viewR.attempts[0]?.agentId ?? '?'), `A's restart ${runR} ran on A's agent`).to.equal(true);

    // A may neither stop nor remove B's runs without --force.
    const sleeper = await as('b', ['run', 'sleeper', '-d']);
    expect(sleeper.code, sleeper.stderr).to.equal(0);
    const runS = nameOf(sleeper.stdout + sleeper.stderr);
    const stop = await as('a', ['stop', runS, '-y']);
    expect(stop.code).to.not.equal(0);
    expect(stop.stderr).to.equal(`run ${runS} belongs to ${BOB}, not to you (${ALICE}): add --force to stop it anyway\n`);
    const rm = await as('a', ['rm', runB, '-y']);
    expect(rm.code).to.not.equal(0);
    expect(rm.stderr).to.equal(`run ${runB} belongs to ${BOB}, not to you (${ALICE}): add --force to delete it anyway\n`);
    expect((await psJson('b', runB)).status).to.equal('done');
    expect((await psJson('b', runS)).status).to.not.equal('stopped');

    const forced = await as('a', ['stop', runS, '-y', '--force']);
    expect(forced.code, forced.stderr).to.equal(0);
    expect(forced.stdout).to.equal(`Run ${runS} stopped.\n`);
    const rmForced = await as('a', ['rm', runB, '-y', '--force']);
    expect(rmForced.code, rmForced.stderr).to.equal(0);
    expect(rmForced.stdout).to.equal(`Deleted ${runB}.\n`);
  });

  it('a process asks STS who it is once, and only when it needs to; agents: local queues are named by the owner', async () => {
    const saved = process.env.AWS_ACCESS_KEY_ID;
    const sqs = new SQSClient({ region: 'us-east-1', endpoint: emulator.endpoint });
    try {
      process.env.AWS_ACCESS_KEY_ID = 'AKIABOB';
      const config = await loadConfig(home.b);
      const before = sts.calls.get('AKIABOB') ?? 0;
      const backend = await openBackend(config);
      expect(sts.calls.get('AKIABOB') ?? 0).to.equal(before);
      const [q1, q2, q3] = [await backend.queueFor('default'), await backend.queueFor('p0123456789'), await backend.queueFor('default')];
      expect(await backend.owner()).to.equal(BOB);
      expect(await backend.owner()).to.equal(BOB);
      expect(sts.calls.get('AKIABOB')).to.equal(before + 1);
      // One queue for every profile: the owner's.
      expect(q2).to.equal(q1).and.equal(q3);
      const prefix = config.aws?.queuePrefix ?? '';
      for (const owner of [ALICE, BOB]) {
        const { QueueUrl } = await sqs.send(new GetQueueUrlCommand({ QueueName: `${prefix}-${ownerQueueId(owner)}-jobs` }));
        expect(QueueUrl).to.be.a('string');
      }
    } finally {
      sqs.destroy();
      if (saved === undefined) delete process.env.AWS_ACCESS_KEY_ID;
      else process.env.AWS_ACCESS_KEY_ID = saved;
    }
  });
});
