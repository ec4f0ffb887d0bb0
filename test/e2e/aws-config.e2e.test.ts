import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { agentUserData } from '../../common/fleet/user-data.js';
import { artifactsListCommand } from '../../coordinator/commands/artifacts.js';
import { logsCommand } from '../../coordinator/commands/logs.js';
import { psCommand } from '../../coordinator/commands/ps.js';
import { tagsAddCommand, tagsListCommand } from '../../coordinator/commands/tags.js';
import { AGENT, CLI, dstack, makeRepo, removeAll, tempDir, type CliResult } from '../support/cli.js';
import { coordinatorContext, submit } from '../support/coordinator.js';
import { startEmulator, uniqueName, type Emulator } from '../support/fauxqs.js';
import { FleetSimulator, type FleetSimOptions } from '../support/fleet-sim.js';
import { S3Proxy, type SeenRequest } from '../support/s3-proxy.js';
import { StsFake } from '../support/sts-fake.js';

const WORKFLOWS = `workflows:
  - name: hello
    provider: bash
    commands: [echo hello]
`;

const CREDS = { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1' };

/** The SQS actions that change nothing. S3 requests that change nothing are GET and HEAD. */
const READ_ONLY_SQS = new Set(['GetQueueUrl', 'GetQueueAttributes', 'ListQueues']);
const mutating = (seen: SeenRequest[]): string[] =>
  seen.filter((r) => (r.sqsAction ? !READ_ONLY_SQS.has(r.sqsAction) : r.method !== 'GET' && r.method !== 'HEAD')).map((r) => r.sqsAction ?? `${r.method} ${r.path}`);

/**
 * The built CLI in an environment with no AWS settings at all: only the given HOME (so no
 * ~/.aws), no AWS_* variables, and no instance metadata to ask.
 */
function bareCli(args: string[], home: string, cwd: string): Promise<CliResult> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AWS_') && !k.startsWith('DSTACK_')));
  const child = spawn(process.execPath, [CLI, ...args], { cwd, env: { ...env, HOME: home, AWS_EC2_METADATA_DISABLED: 'true' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** An S3 endpoint that answers every request 403 with no body, as S3 answers HeadBucket on a bucket of another account. */
async function forbiddingS3(): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    req.resume();
    res.writeHead(403);
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe('e2e: dstack config on AWS says what is wrong, and only it provisions', function () {
  this.timeout(60_000);
  let emulator: Emulator;
  let proxy: S3Proxy;
  let endpoint: string;
  let forbidding: { url: string; server: Server };
  let repo: string;
  const dirs: string[] = [];
  const dir = (prefix: string): string => {
    const d = tempDir(prefix);
    dirs.push(d);
    return d;
  };

  before(async () => {
    emulator = await startEmulator();
    proxy = new S3Proxy(emulator.endpoint);
    endpoint = await proxy.start();
    forbidding = await forbiddingS3();
    repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
  });
  after(async () => {
    await proxy.stop();
    await new Promise((resolve) => forbidding.server.close(resolve));
    await emulator.stop();
    removeAll(repo, ...dirs);
  });

  const awsFlags = (bucket: string, s3: string): string[] => [
    'config', '--backend', 'aws', '--region', 'us-east-1', '--bucket', bucket, '--queue-prefix', uniqueName('q'), '--sqs-endpoint', emulator.endpoint, '--s3-endpoint', s3,
  ];

  it('no AWS credentials at all: one line that says none were found and how to set them; a fresh HOME is left empty', async () => {
    const home = dir('nocreds');
    const r = await bareCli(awsFlags(uniqueName('b'), emulator.endpoint), home, repo);
    expect(r.code, r.stderr).to.equal(1);
    expect(existsSync(join(home, '.dstack', 'config.yaml')), 'config.yaml left behind').to.equal(false);
    expect(existsSync(join(home, '.dstack'))).to.equal(false);
    expect(r.stderr.trimEnd().split('\n'), r.stderr).to.have.length(1);
    expect(r.stderr).to.match(/^no AWS credentials found while trying to [^\n]+: run `aws configure`, or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
    expect(r.stderr).to.not.include('rejected');
  });

  it('no AWS credentials at all after config: run and secrets list say none were found, in one line each (agents: local)', async () => {
    const home = dir('nocreds-later');
    const sts = new StsFake({ test: { arn: 'arn:aws:iam::111122223333:user/test', userId: 'AIDATEST', account: '111122223333' } });
    const stsEndpoint = await sts.start();
    try {
      const c = await dstack([...awsFlags(uniqueName('b'), emulator.endpoint), '--agents', 'local', '--sts-endpoint', stsEndpoint], { cwd: repo, home: join(home, '.dstack'), env: CREDS });
      expect(c.code, c.stderr).to.equal(0);
    } finally {
      await sts.stop();
    }
    for (const args of [['run', 'hello'], ['secrets', 'list']]) {
      const r = await bareCli(args, home, repo);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).to.equal(1);
      expect(r.stderr.trimEnd().split('\n'), r.stderr).to.have.length(1);
      expect(r.stderr, args.join(' ')).to.match(/^no AWS credentials found while trying to [^\n]+: run `aws configure`, or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
    }
  });

  it('S3 answers 403 with no body: "access denied to bucket X: wrong account or missing s3:ListBucket"; no config.yaml is left', async () => {
    const home = dir('forbidden');
    const bucket = uniqueName('theirs');
    const r = await dstack(awsFlags(bucket, forbidding.url), { cwd: repo, home: join(home, '.dstack'), env: CREDS });
    expect(r.code, r.stderr).to.equal(1);
    expect(r.stderr).to.match(new RegExp(`^access denied to bucket ${bucket}: wrong account or missing s3:ListBucket \\(HTTP 403 while trying to open bucket ${bucket}\\)\\n$`));
    expect(existsSync(join(home, '.dstack', 'config.yaml'))).to.equal(false);
  });

  it('a failed config over an existing one keeps the old file as it was, comments included', async () => {
    const home = dir('keep');
    const old = "# the team's settings\nbackend: local\nlocal:\n  maxParallelJobs: 3 # two GPUs and a spare\n";
    writeFileSync(join(home, 'config.yaml'), old);
    const r = await dstack(awsFlags(uniqueName('b'), forbidding.url), { cwd: repo, home, env: CREDS });
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/^access denied to bucket /);
    expect(readFileSync(join(home, 'config.yaml'), 'utf8')).to.equal(old);
  });

  it('a config.yaml that is a symlink (dotfiles) is updated where it points, and stays a link', async () => {
    const home = dir('linked');
    const dotfiles = dir('dotfiles');
    writeFileSync(join(dotfiles, 'dstack.yaml'), '# mine\nbackend: local\n');
    symlinkSync(join(dotfiles, 'dstack.yaml'), join(home, 'config.yaml'));
    const r = await dstack(['config', '--max-parallel-jobs', '3'], { cwd: repo, home });
    expect(r.code, r.stderr).to.equal(0);
    expect(lstatSync(join(home, 'config.yaml')).isSymbolicLink()).to.equal(true);
    expect(readFileSync(join(dotfiles, 'dstack.yaml'), 'utf8')).to.equal('# mine\nbackend: local\nlocal:\n  maxParallelJobs: 3\n');
  });

  it('ps, run and the agent only open: with no bucket or queues they say to run `dstack config` and create nothing; `dstack config` does', async () => {
    const home = dir('unprovisioned');
    const bucket = uniqueName('later');
    writeFileSync(
      join(home, 'config.yaml'),
      `backend: aws\naws:\n  region: us-east-1\n  bucket: ${bucket}\n  queuePrefix: ${uniqueName('q')}\n  endpoints: { sqs: "${endpoint}", s3: "${endpoint}", sts: "${emulator.endpoint}" }\n  agents: local\n`,
    );
    proxy.requests = [];
    const said = `bucket ${bucket} does not exist (region us-east-1): run \`dstack config\` to create it`;
    for (const args of [['ps'], ['run', 'hello', '-d']]) {
      const r = await dstack(args, { cwd: repo, home, env: CREDS });
      expect(r.code, `${args.join(' ')}: ${r.stdout}${r.stderr}`).to.equal(1);
      expect(r.stderr, args.join(' ')).to.equal(`${said}\n`);
    }
    const agent = spawn(process.execPath, [AGENT], { env: { ...process.env, ...CREDS, DSTACK_HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] });
    let agentErr = '';
    agent.stderr.on('data', (d: Buffer) => (agentErr += d.toString()));
    expect(await new Promise<number | null>((resolve) => agent.on('close', resolve))).to.equal(1);
    expect((JSON.parse(agentErr) as { msg: string }).msg).to.equal(said);
    expect(proxy.requests.length, 'requests seen').to.be.above(2);
    expect(mutating(proxy.requests)).to.deep.equal([]);

    const c = await dstack(['config', '--bucket', bucket], { cwd: repo, home, env: CREDS });
    expect(c.code, c.stderr).to.equal(0);
    expect(mutating(proxy.requests)).to.include.members([`PUT /${bucket}/`, 'CreateQueue', 'SetQueueAttributes']);
    const ps = await dstack(['ps'], { cwd: repo, home, env: CREDS });
    expect(ps.code, ps.stderr).to.equal(0);
    expect(ps.stdout).to.equal('No runs yet in this repo. Start one with `dstack run WORKFLOW`.\n');
  });

  it('ps, logs, artifacts list and tags list send no mutating AWS call and start no instance; ps says when jobs wait with no capacity', async () => {
    const home = dir('readers');
    const yaml = `backend: aws\naws:\n  region: us-east-1\n  bucket: ${uniqueName('reads')}\n  queuePrefix: ${uniqueName('r')}\n  endpoints: { sqs: "${endpoint}", s3: "${endpoint}", sts: "${emulator.endpoint}" }\n  agents: ec2\n  maxInstances: 3\n`;
    // No room for an instance while the job is submitted: it stays queued with no capacity.
    const simOptions: FleetSimOptions = { userData: (id) => agentUserData(ctx.config, id), maxInstances: 0, env: CREDS };
    const sim = new FleetSimulator(simOptions);
    const ctx = await coordinatorContext({ configYaml: yaml, home, cwd: repo, compute: sim });
    try {
      const run = await submit(ctx, 'hello');
      const profileId = (await sim.plan({ interruptible: false, local: false })).profileId;
      mkdirSync(join(repo, 'weights'), { recursive: true });
      writeFileSync(join(repo, 'weights', 'w.bin'), 'weights');
      expect(await tagsAddCommand(ctx, { tag: 'baseline', run: undefined, paths: ['weights'] })).to.equal(0);
      // From here a reconcile could launch: ps must not.
      simOptions.maxInstances = 3;
      // Each command opens the backend anew, as the CLI does.
      const reader = await coordinatorContext({ configYaml: yaml, home, cwd: repo, compute: sim, provision: false });
      proxy.requests = [];
      const before = reader.out.text().length;
      expect(await psCommand(reader, { run: undefined, all: false, json: false })).to.equal(0);
      const psSaid = reader.out.text().slice(before);
      expect(psSaid).to.match(new RegExp(`^${run}\\s+hello\\s+\\S+\\s+Submitted`, 'm'));
      expect(psSaid).to.include(`1 job waits for profile ${profileId} and no agent is there to take it: run \`dstack coordinator\` to start capacity (ps starts none)\n`);
      expect(await logsCommand(reader, { run, follow: false, since: undefined })).to.equal(0);
      expect(await artifactsListCommand(reader, { run: ':baseline', json: false })).to.equal(0);
      expect(await tagsListCommand(reader, { json: false })).to.equal(0);
      expect(reader.out.text()).to.match(/^weights\s+1\s+7 B$/m);
      expect(reader.out.text()).to.match(/^baseline\s/m);
      expect(proxy.requests.length, 'requests seen').to.be.above(4);
      expect(mutating(proxy.requests)).to.deep.equal([]);
      expect(sim.launched).to.have.length(0);
    } finally {
      await sim.shutdown();
    }
  });
});
