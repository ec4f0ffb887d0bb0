import { expect } from 'chai';
import { ConfigError, UsageError } from '../../common/errors.js';
import { callerArn } from '../../common/aws/identity.js';
import { ExternalAgents } from '../../common/local/local-compute.js';
import type { Compute, Demand } from '../../common/ports.js';
import { reconcile, rememberProfile } from '../../coordinator/fleet.js';
import { localOwner, ownerLabel, ownerQueueId } from '../../common/owner.js';
import { RunRecordSchema } from '../../common/records/runs.js';
import { loadRun, runKeys, settleRun } from '../../common/runs.js';
import { listSummaries } from '../../common/run-index.js';
import { openBackend } from '../../common/backend.js';
import { parseConfig } from '../../common/config.js';
import { repoInfo } from '../../coordinator/code-capture.js';
import { psCommand } from '../../coordinator/commands/ps.js';
import { rmCommand } from '../../coordinator/commands/rm.js';
import { stopCommand } from '../../coordinator/commands/stop.js';
import { restartCommand } from '../../coordinator/commands/restart.js';
import { makeRepo, removeAll, tempDir } from '../support/cli.js';
import { coordinatorContext, submit } from '../support/coordinator.js';
import { StsFake } from '../support/sts-fake.js';

const ALICE = 'arn:aws:iam::111122223333:user/alice';
const BOB = 'arn:aws:iam::111122223333:user/bob';

type Ctx = Awaited<ReturnType<typeof coordinatorContext>>;

describe('owners: ps shows them, stop and rm refuse another owner\'s run without --force', () => {
  let repo: string;
  let home: string;
  let alice: Ctx;
  let bob: Ctx;
  beforeEach(async () => {
    repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: hi\n    provider: bash\n    commands: [echo hi]\n  - name: tok\n    provider: bash\n    env: [TOKEN]\n    commands: [echo hi]\n' });
    home = tempDir('home');
    // Two users of one store (a shared bucket): no agents, so submitted runs stay queued.
    alice = await coordinatorContext({ configYaml: '', home, cwd: repo, compute: new ExternalAgents(), owner: ALICE });
    bob = await coordinatorContext({ configYaml: '', home, cwd: repo, compute: new ExternalAgents(), owner: BOB });
  });
  afterEach(() => removeAll(repo, home));

  const refusal = async (p: Promise<number>): Promise<Error> => {
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(UsageError);
    return err as Error;
  };
  const status = async (run: string): Promise<string> => (await loadRun(alice.store, (await repoInfo(repo)).repoId, run)).status;
  /** Ends a run as done, as an agent would. */
  const finish = async (run: string): Promise<void> =>
    void (await settleRun(alice.store, (await repoInfo(repo)).repoId, run, { status: 'done', exitCode: 0, reason: null, finishedAt: new Date().toISOString(), attempt: 1 }));

  it('every run records its owner; ps shows no OWNER column while all listed runs are one owner\'s, and --json always carries it', async () => {
    const a = await submit(alice, 'hi');
    const r = RunRecordSchema.parse(JSON.parse((await alice.store.get(runKeys.record((await repoInfo(repo)).repoId, a)))!.toString()));
    expect(r.owner).to.equal(ALICE);
    expect(await psCommand(alice, { run: undefined, all: false, json: false })).to.equal(0);
    const table = alice.out.text().split('\n').filter((l) => l.startsWith('RUN'));
    expect(table.at(-1)).to.not.contain('OWNER');
    expect(await psCommand(alice, { run: undefined, all: false, json: true })).to.equal(0);
    const json = JSON.parse(alice.out.text().trim().split('\n').filter((l) => l.startsWith('[')).at(-1)!) as Array<{ runName: string; owner: string | null }>;
    expect(json.map((j) => [j.runName, j.owner])).to.deep.equal([[a, ALICE]]);
  });

  it('ps shows an OWNER column once two owners\' runs are listed, finished ones (from the index) included', async () => {
    const a = await submit(alice, 'hi');
    const b = await submit(bob, 'hi');
    await finish(a);
    await finish(b);
    expect(await psCommand(alice, { run: undefined, all: true, json: false })).to.equal(0);
    const lines = alice.out.text().trim().split('\n');
    expect(lines.find((l) => l.startsWith('RUN'))).to.match(/^RUN {2}WORKFLOW {2}OWNER {2}SUBMITTED/);
    expect(lines.find((l) => l.startsWith(a))).to.match(new RegExp(`^${a} {2}hi {2}user/alice {2}`));
    expect(lines.find((l) => l.startsWith(b))).to.match(new RegExp(`^${b} {2}hi {2}user/bob {2}`));
  });

  it('ps shows no OWNER column for one owner with a long ARN, whose finished runs the index names cut short', async () => {
    const long = `arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_AdministratorAccess_0123456789abcdef/${'x'.repeat(60)}@example.com`;
    const me = { ...alice, owner: () => Promise.resolve(long) };
    const a = await submit(me, 'hi');
    await finish(a);
    const b = await submit(me, 'hi');
    expect(await psCommand(me, { run: undefined, all: true, json: false })).to.equal(0);
    const lines = me.out.text().trim().split('\n');
    expect(lines.find((l) => l.startsWith('RUN'))).to.match(/^RUN {2}WORKFLOW {2}SUBMITTED/);
    expect(lines.filter((l) => l.startsWith(a) || l.startsWith(b))).to.have.length(2);
  });

  it('stop of another owner\'s run is refused in one line naming the owner and --force; --force stops it', async () => {
    const b = await submit(bob, 'hi');
    const err = await refusal(stopCommand(alice, { run: b, all: false, abort: false, yes: true }));
    expect(err.message).to.equal(`run ${b} belongs to ${BOB}, not to you (${ALICE}): add --force to stop it anyway`);
    expect(await status(b)).to.equal('submitted');
    expect(await stopCommand(alice, { run: b, all: false, abort: false, yes: true, force: true })).to.equal(0);
    expect(await status(b)).to.equal('stopped');
  });

  it('stop -a stops only the caller\'s runs and says how many of other owners it left; with --force, all', async () => {
    const a = await submit(alice, 'hi');
    const b = await submit(bob, 'hi');
    expect(await stopCommand(alice, { run: undefined, all: true, abort: false, yes: true })).to.equal(0);
    expect(await status(a)).to.equal('stopped');
    expect(await status(b)).to.equal('submitted');
    expect(alice.out.text()).to.contain('Leaving 1 run(s) of other owners alone (add --force to stop them too).');
    expect(await stopCommand(alice, { run: undefined, all: true, abort: false, yes: true, force: true })).to.equal(0);
    expect(await status(b)).to.equal('stopped');
  });

  it('rm of another owner\'s run is refused unless --force; rm -a leaves other owners\' runs', async () => {
    const a = await submit(alice, 'hi');
    const b = await submit(bob, 'hi');
    await finish(a);
    await finish(b);
    const err = await refusal(rmCommand(alice, { run: b, all: false, yes: true }));
    expect(err.message).to.equal(`run ${b} belongs to ${BOB}, not to you (${ALICE}): add --force to delete it anyway`);
    expect(await rmCommand(alice, { run: undefined, all: true, yes: true })).to.equal(0);
    expect(alice.out.text()).to.contain(`Deleted ${a}.`).and.contain('Leaving 1 run(s) of other owners alone (add --force to delete them too).');
    expect(await status(b)).to.equal('done');
    expect(await rmCommand(alice, { run: b, all: false, yes: true, force: true })).to.equal(0);
    expect(alice.out.text()).to.contain(`Deleted ${b}.`);
    expect(await listSummaries(alice.store, (await repoInfo(repo)).repoId)).to.deep.equal([]);
  });

  it('a run recorded under a generated assumed-role session name (aws-sdk-js-<ms>) is its role\'s: stop and rm take it without --force', async () => {
    const role = 'arn:aws:sts::111122223333:assumed-role/Dev';
    const before = { ...bob, owner: () => Promise.resolve(`${role}/aws-sdk-js-1700000000123`) };
    const me = { ...alice, owner: () => Promise.resolve(role) };
    const b = await submit(before, 'hi');
    expect(await stopCommand(me, { run: b, all: false, abort: false, yes: true })).to.equal(0);
    expect(await status(b)).to.equal('stopped');
    expect(await rmCommand(me, { run: b, all: false, yes: true })).to.equal(0);
    expect(me.out.text()).to.contain(`Deleted ${b}.`);
  });

  it('rm of another owner\'s run whose record is damaged is refused by the owner its index key names, unless --force; the caller\'s own goes, long ARN or not', async () => {
    const { repoId } = await repoInfo(repo);
    const long = `arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_AdministratorAccess_0123456789abcdef/${'x'.repeat(60)}@example.com`;
    const me = { ...alice, owner: () => Promise.resolve(long) };
    const b = await submit(bob, 'hi');
    const a = await submit(me, 'hi');
    const c = await submit(me, 'hi');
    for (const run of [a, b, c]) {
      await finish(run);
      await alice.store.put(runKeys.record(repoId, run), '{ damaged');
    }
    const err = await refusal(rmCommand(me, { run: b, all: false, yes: true }));
    expect(err.message).to.match(new RegExp(`^run ${b} belongs to ${BOB}, not to you \\(.*\\): add --force to delete it anyway$`));
    expect((await listSummaries(alice.store, repoId)).map((x) => x.runName)).to.include(b);
    expect(await rmCommand(me, { run: a, all: false, yes: true })).to.equal(0);
    expect(me.out.text()).to.contain(`Deleted ${a}.`);
    // rm -a compares the index's owner the same way: the caller's own goes, the other's stays.
    expect(await rmCommand(me, { run: undefined, all: true, yes: true })).to.equal(0);
    expect(me.out.text()).to.contain(`Deleted ${c}.`).and.contain('Leaving 1 run(s) of other owners alone');
    expect(await rmCommand(me, { run: b, all: false, yes: true, force: true })).to.equal(0);
    expect(me.out.text()).to.contain(`Deleted ${b}.`);
    expect(await listSummaries(alice.store, repoId)).to.deep.equal([]);
  });

  it('restart of another owner\'s run that pins values from their shell is refused unless --force; without pinned values it goes', async () => {
    const b = await submit({ ...bob, shellEnv: { TOKEN: 'bobs-token-value' } }, 'tok');
    const err = await refusal(restartCommand(alice, { run: b, detach: true }));
    expect(err.message).to.equal(`run ${b} belongs to ${BOB} and pins values from their shell (TOKEN): add --force to restart it with those values anyway`);
    expect(alice.out.text()).to.not.contain('Run ');
    expect(await restartCommand(alice, { run: b, detach: true, force: true })).to.equal(0);
    const plain = await submit(bob, 'hi');
    expect(await restartCommand(alice, { run: plain, detach: true })).to.equal(0);
  });

  it('runs recorded before owners existed read as unknown owner: ps shows -, and anyone may stop or remove them without asking who they are', async () => {
    const a = await submit(alice, 'hi');
    const { repoId } = await repoInfo(repo);
    const key = runKeys.record(repoId, a);
    const old = JSON.parse((await alice.store.get(key))!.toString()) as Record<string, unknown>;
    delete old.owner;
    await alice.store.put(key, JSON.stringify(old));
    const b = await submit(bob, 'hi');
    // Nobody has to be asked: a CLI that cannot tell who it is still stops and removes an ownerless run.
    const anonymous = { ...bob, owner: () => Promise.reject(new ConfigError('no identity')) };
    expect(await stopCommand(anonymous, { run: a, all: false, abort: false, yes: true })).to.equal(0);
    expect(await psCommand(alice, { run: undefined, all: false, json: true })).to.equal(0);
    const json = JSON.parse(alice.out.text().trim().split('\n').filter((l) => l.startsWith('[')).at(-1)!) as Array<{ runName: string; owner: string | null }>;
    expect(json.map((j) => [j.runName, j.owner])).to.deep.equal([[b, BOB]]);
    expect(await rmCommand(anonymous, { run: a, all: false, yes: true })).to.equal(0);
    expect(anonymous.out.text()).to.contain(`Deleted ${a}.`);
  });

  it('the run index carries the owner for ps -a, cut short when long; index keys of older versions read as no owner', async () => {
    const { repoId } = await repoInfo(repo);
    const long = `arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_AdministratorAccess_0123456789abcdef/${'x'.repeat(60)}@example.com`;
    const a = await submit({ ...alice, owner: () => Promise.resolve(long) }, 'hi');
    await alice.store.put(`repos/${repoId}/index/submitted/2020-01-01T00:00:00.000Z,old-run-1,hi,3`, '');
    const summaries = await listSummaries(alice.store, repoId);
    const mine = summaries.find((x) => x.runName === a);
    expect(long.startsWith(mine?.owner ?? '-')).to.equal(true);
    expect(encodeURIComponent(mine?.owner ?? '').length).to.be.at.most(90);
    const old = summaries.find((x) => x.runName === 'old-run-1');
    expect(old).to.deep.include({ workflow: 'hi', maxAttempts: 3 });
    expect(old?.owner).to.equal(undefined);
  });

  it('the local backend\'s owner is user@host', async () => {
    const backend = await openBackend(parseConfig('', 'test', home));
    expect(await backend.owner()).to.equal(localOwner()).and.match(/^[^@]+@[^@]+$/);
  });

  it('an owner is shown short (ARN without its account head), and its queue id is a short hash', () => {
    expect(ownerLabel('arn:aws:sts::111122223333:assumed-role/Admin/alice@corp.com')).to.equal('assumed-role/Admin/alice@corp.com');
    expect(ownerLabel('alice@laptop')).to.equal('alice@laptop');
    expect(ownerQueueId(ALICE)).to.match(/^u[0-9a-f]{8}$/).and.not.equal(ownerQueueId(BOB));
  });
});

describe('fleet: profiles that share one queue (agents: local, the local backend) count its backlog once', () => {
  let repo: string;
  let home: string;
  afterEach(() => removeAll(repo, home));

  it('reconcile asks for capacity for one queued job once, and ps says once that it waits', async () => {
    repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: hi\n    provider: bash\n    commands: [echo hi]\n' });
    home = tempDir('home');
    const asked: Demand[][] = [];
    const external = new ExternalAgents();
    const compute: Compute = {
      plan: () => external.plan(),
      listAgents: () => external.listAgents(),
      ensureCapacity: async (demand) => void asked.push(demand),
    };
    const ctx = await coordinatorContext({ configYaml: '', home, cwd: repo, compute, owner: ALICE });
    // Profiles remembered from runs on other machines' EC2 fleets: here every one maps to the one queue.
    for (const profileId of ['p0123456789', 'p9876543210']) await rememberProfile(ctx, { profileId, offers: [] });
    await submit(ctx, 'hi');
    asked.length = 0;
    await reconcile(ctx);
    expect(asked).to.have.length(1);
    expect(asked[0]?.reduce((n, d) => n + d.backlog, 0)).to.equal(1);
    expect(await psCommand(ctx, { run: undefined, all: false, json: false })).to.equal(0);
    expect(ctx.out.text().split('\n').filter((l) => l.includes('waits'))).to.deep.equal([
      '1 job waits and no agent is there to take it: run `dstack coordinator` to start capacity (ps starts none)',
    ]);
  });
});

describe('owners: STS GetCallerIdentity on the wire (fake STS, Query protocol)', () => {
  let sts: StsFake;
  let endpoint: string;
  let sessions = 0;
  const ROLE = 'arn:aws:sts::111122223333:assumed-role/Dev';
  // Taken when the tests start, not when the file loads: another file's hooks may have set them since.
  let saved: { id: string | undefined; secret: string | undefined };
  before(async () => {
    saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    sts = new StsFake({
      AKIAALICE: { arn: ALICE, userId: 'AIDAALICE', account: '111122223333' },
      AKIABOB: { arn: BOB, userId: 'AIDABOB', account: '111122223333' },
      // A role_arn profile without role_session_name: the SDK names each session `aws-sdk-js-<Date.now()>`.
      AKIAROLE: { arn: () => `${ROLE}/aws-sdk-js-${Date.now() + (sessions += 1)}`, userId: 'AROAROLE:x', account: '111122223333' },
      AKIABOTO: { arn: () => `${ROLE}/botocore-session-${1700000000 + (sessions += 1)}`, userId: 'AROAROLE:y', account: '111122223333' },
      AKIASSO: { arn: 'arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Admin_0123/alice@example.com', userId: 'AROASSO:alice@example.com', account: '111122223333' },
    });
    endpoint = await sts.start();
  });
  after(async () => {
    await sts.stop();
    for (const [name, value] of [['AWS_ACCESS_KEY_ID', saved.id], ['AWS_SECRET_ACCESS_KEY', saved.secret]] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });
  const as = (keyId: string): void => {
    process.env.AWS_ACCESS_KEY_ID = keyId;
    process.env.AWS_SECRET_ACCESS_KEY = `secret-of-${keyId}`;
  };

  it('names the caller by the access key that signed the request', async () => {
    as('AKIAALICE');
    expect(await callerArn({ region: 'us-east-1', endpoint })).to.equal(ALICE);
    as('AKIABOB');
    expect(await callerArn({ region: 'us-east-1', endpoint })).to.equal(BOB);
  });

  it('an assumed role\'s generated session name is no part of the owner, so every process of one user is one owner; real session names stay', async () => {
    as('AKIAROLE');
    const [first, second] = [await callerArn({ region: 'us-east-1', endpoint }), await callerArn({ region: 'us-east-1', endpoint })];
    expect(first).to.equal(`${ROLE}`).and.equal(second);
    as('AKIABOTO');
    expect(await callerArn({ region: 'us-east-1', endpoint })).to.equal(`${ROLE}`);
    as('AKIASSO');
    expect(await callerArn({ region: 'us-east-1', endpoint })).to.equal('arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Admin_0123/alice@example.com');
  });

  it('credentials STS does not know give one line that says so', async () => {
    as('AKIANOBODY');
    const err = await callerArn({ region: 'us-east-1', endpoint }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(ConfigError);
    expect((err as Error).message).to.match(/^AWS rejected the credentials \(InvalidClientTokenId\) while trying to ask STS who you are: /);
  });
});
