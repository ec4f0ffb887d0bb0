import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import ssh2 from 'ssh2';
import { agentUserData } from '../../common/fleet/user-data.js';
import { runCommand } from '../../coordinator/commands/run.js';
import { sshCommand, type SshTerminal } from '../../coordinator/commands/ssh.js';
import { stopCommand } from '../../coordinator/commands/stop.js';
import { connectSsh, forwardPort } from '../../coordinator/ssh-forward.js';
import { userSshKey } from '../../coordinator/ssh-key.js';
import { openSecretsManager } from '../../common/aws/secrets-manager.js';
import { httpGetFollowing } from '../../coordinator/links.js';
import { reachFor } from '../../coordinator/reach.js';
import { SecretsManagerFake } from '../support/secrets-manager-fake.js';
import { requireTool } from '../support/tools.js';
import { dstack, makeRepo, removeAll, tempDir, waitFor, withRepoAndHome } from '../support/cli.js';
import { coordinatorContext, submit, waitForRun } from '../support/coordinator.js';
import { startEmulator, uniqueName, type Emulator } from '../support/fauxqs.js';
import { FleetSimulator } from '../support/fleet-sim.js';

const WORKFLOWS = `workflows:
  - name: web
    provider: bash
    ports: 1
    commands:
      - python3 -m http.server $PORT_0 --bind 127.0.0.1
  - name: nb
    provider: notebook
`;

const configYaml = (endpoint: string, sm: string, bucket: string, prefix: string, sshPort: number): string => `backend: aws
aws:
  region: us-east-1
  bucket: ${bucket}
  queuePrefix: ${prefix}
  endpoints: { sqs: "${endpoint}", s3: "${endpoint}", sts: "${endpoint}", secretsmanager: "${sm}" }
  agents: ec2
  maxInstances: 2
  sshPort: ${sshPort}
local:
  visibilityTimeoutSec: 5
  agentIdleTimeoutSec: 30
  stopGraceSec: 2
`;

/** A port free on 127.0.0.1 now: the simulated instances serve SSH on it, each on its own 127.0.0.N. */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** A terminal for `dstack ssh RUN COMMAND` that is not one: what the command prints is collected. */
function pipeTerminal(): SshTerminal & { text: () => string } {
  const stdin = new PassThrough();
  stdin.end();
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let text = '';
  stdout.on('data', (d: Buffer) => (text += d.toString()));
  stderr.on('data', (d: Buffer) => (text += d.toString()));
  return { stdin, stdout, stderr, text: () => text };
}

describe('e2e: SSH to a job on a simulated EC2 instance (its own 127.0.0.N, the agent\'s SSH endpoint)', function () {
  this.timeout(120_000);
  let emulator: Emulator;
  const secretsManager = new SecretsManagerFake();
  let repo: string;
  let home: string;
  let sim: FleetSimulator;
  let sshPort: number;
  let ctx: Awaited<ReturnType<typeof coordinatorContext>>;

  before(async () => {
    emulator = await startEmulator();
    repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS, 'marker-file.txt': 'hello\n' });
    home = tempDir('sshhome');
    sshPort = await freePort();
    sim = new FleetSimulator({
      userData: (profileId) => agentUserData(ctx.config, profileId),
      maxInstances: 2,
      env: { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1' },
    });
    const sm = await secretsManager.start();
    const base = await coordinatorContext({ configYaml: configYaml(emulator.endpoint, sm, uniqueName('ssh'), uniqueName('s'), sshPort), home, cwd: repo, compute: sim });
    // The dev environment's token is a secret of the run, in Secrets Manager, as `dstack run` keeps it on AWS.
    ctx = { ...base, secrets: openSecretsManager(base.config.aws) };
  });
  afterEach(function () {
    if (this.currentTest?.state === 'failed') for (const i of sim.launched) process.stderr.write(`--- ${i.id} (${i.address})\n${i.output}`);
  });
  after(async () => {
    await sim.shutdown();
    await emulator.stop();
    await secretsManager.stop();
    removeAll(repo, home);
  });

  it('the CLI forwards a local port to the job\'s server on instance N; a wrong key and another port are refused; `ssh --config` works with OpenSSH; the end of the job closes the session', async () => {
    const run = await submit(ctx, 'web');
    const view = await waitForRun(ctx.store, repo, run, (v) => v.attempts[0]?.service?.ssh !== undefined, 30_000, 'the attempt to publish its SSH endpoint');
    const instance = sim.launched[0];
    const ssh = view.attempts[0]?.service?.ssh;
    // The submitter's key went with the job; the agent publishes the instance's address and its own port.
    const key = await userSshKey(home);
    expect(view.record.spec.sshKey).to.equal(readFileSync(join(home, 'ssh', 'id_ed25519.pub'), 'utf8').trim());
    expect(ssh?.host).to.equal(instance?.address).and.to.match(/^127\.0\.0\.\d+$/);
    expect(ssh?.port).to.equal(sshPort);
    if (!ssh) throw new Error('no ssh');

    // `dstack ssh RUN COMMAND`: a command in the job's folder, with the job's environment.
    const t = pipeTerminal();
    expect(await sshCommand(ctx, { run, config: false, command: ['echo', '$PORT_0;', 'pwd;', 'ls'] }, t)).to.equal(0);
    const [jobPort, cwd, ...files] = t.text().trim().split('\n');
    expect(files).to.include('marker-file.txt');
    expect(cwd).to.equal(view.attempts[0]?.cwd);

    // The forward: a localhost URL that reaches the job's server on the instance's loopback.
    const client = await connectSsh(ssh, key.privateKey);
    const fwd = await forwardPort(client, Number(jobPort));
    try {
      const page = await waitFor(async () => {
        const r = await fetch(`http://127.0.0.1:${fwd.localPort}/`).catch(() => undefined);
        return r?.status === 200 ? r.text() : undefined;
      }, 20_000, 'the job\'s server through the forward');
      expect(page).to.include('marker-file.txt');

      // A key that is not the submitter's is refused.
      const stranger = await connectSsh(ssh, ssh2.utils.generateKeyPairSync('ed25519').private).catch((e: unknown) => e as Error);
      expect((stranger as Error).message).to.equal(`SSH to the agent at ${ssh.host}:${ssh.port}: this key was refused (it is not the key of the run)`);
      // A port that is not the job's (here: the agent's own SSH port) cannot be forwarded.
      const refused = await new Promise<string>((resolve) => client.forwardOut('127.0.0.1', 1, '127.0.0.1', sshPort, (err) => resolve(err ? err.message : 'opened')));
      expect(refused).to.match(/^\(SSH\) Channel open failure/);

      // `dstack ssh RUN --config`: a Host block that the system's OpenSSH client uses as it is.
      const c = pipeTerminal();
      const before = ctx.out.text().length;
      expect(await sshCommand(ctx, { run, config: true, command: [] }, c)).to.equal(0);
      const block = ctx.out.text().slice(before);
      expect(block).to.include(`Host dstack-${run}\n  HostName ${ssh.host}\n  Port ${sshPort}\n`);
      expect(block).to.include(`# VS Code: vscode://vscode-remote/ssh-remote+dstack-${run}${cwd ?? ''}`);
      const sshConfig = join(home, 'ssh-config');
      writeFileSync(sshConfig, block);
      const viaOpenSsh = await new Promise<string>((resolve) =>
        execFile('ssh', ['-F', sshConfig, '-o', 'BatchMode=yes', `dstack-${run}`, 'pwd'], { timeout: 20_000 }, (err, stdout, stderr) => resolve(err ? `error: ${stderr}` : stdout)),
      );
      expect(viaOpenSsh.trim()).to.equal(cwd);

      // The job ends: the agent closes its submitter's connections.
      const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
      expect(await stopCommand(ctx, { run, all: false, abort: false, yes: true, force: false })).to.equal(0);
      await closed;
    } finally {
      await fwd.close();
      client.end();
    }
  });

  it('a notebook on instance N: `dstack run -d` prints a localhost link through the forward, and attach forwards it again', async function () {
    requireTool(this, 'jupyter-notebook');
    // As the CLI does it: `dstack run nb -d` waits for the link.
    const before = ctx.out.text().length;
    const code = await runCommand(ctx, { workflow: 'nb', args: [], detach: true, dryRun: false, tag: undefined, useCache: false, overrides: { env: [], artifacts: [], deps: [] }, overrideArgv: [] });
    const said = ctx.out.text().slice(before);
    expect(code, said).to.equal(0);
    const submitted = /Run ([a-z]+-[a-z]+-\d+)/.exec(said)?.[1] ?? '';
    const link = /is ready: (http\S+)/.exec(said)?.[1] ?? '';
    expect(link, ctx.out.text()).to.match(/^http:\/\/localhost:\d+\/tree\?token=[A-Za-z0-9_-]{32}$/);
    const view = await waitForRun(ctx.store, repo, submitted, (v) => v.attempts[0]?.service?.server?.ready === true, 10_000, 'the notebook');
    const instance = sim.launched.find((i) => i.id === view.attempts[0]?.agentId);
    expect(view.attempts[0]?.service?.ssh?.host).to.equal(instance?.address);
    // The server listens on the instance's loopback only, not on its address.
    const serverPort = view.attempts[0]?.service?.server?.port ?? 0;
    const direct = await fetch(`http://${instance?.address ?? ''}:${serverPort}/`).then((r) => r.status, () => 0);
    expect(direct).to.equal(0);
    // `dstack run -d` has returned: its forward is closed. Attach's reach forwards again.
    const { reach, forwarded, close } = await reachFor(ctx, view.record);
    try {
      expect(forwarded).to.equal(true);
      const at = await reach(serverPort);
      const token = new URL(link).searchParams.get('token') ?? '';
      expect(await httpGetFollowing(`http://${at?.host ?? ''}:${at?.port ?? 0}/tree?token=${token}`)).to.equal(200);
      const listing = await fetch(`http://${at?.host ?? ''}:${at?.port ?? 0}/api/contents?token=${token}`).then((r) => r.text());
      expect(listing).to.include('marker-file.txt');
    } finally {
      await close();
      await stopCommand(ctx, { run: submitted, all: false, abort: false, yes: true, force: false });
    }
  });
});

describe('e2e: dstack ssh on the local backend', function () {
  this.timeout(60_000);
  const env = withRepoAndHome(`workflows:
  - name: nap
    provider: bash
    commands: [sleep 30]
`);

  it('says in one line that the job runs on this machine and names its folder', async () => {
    const started = await dstack(['run', 'nap', '-d'], { cwd: env.repo, home: env.home });
    const run = /Run ([a-z]+-[a-z]+-\d+)/.exec(started.stdout)?.[1] ?? '';
    expect(run, started.stdout + started.stderr).to.not.equal('');
    const r = await waitFor(async () => {
      const x = await dstack(['ssh', run], { cwd: env.repo, home: env.home });
      // Running, and its folder set up.
      return x.code === 0 && x.stdout.includes('its folder is /') ? x : undefined;
    }, 30_000, 'the run to start');
    const folder = new RegExp(`^Run ${run} runs on this machine \\(local backend\\): its folder is (/\\S+)\\n$`).exec(r.stdout)?.[1] ?? '';
    // The job's checkout, there while the job runs.
    expect(existsSync(join(folder, '.dstack', 'workflows.yaml')), r.stdout).to.equal(true);
    await dstack(['stop', run, '-y'], { cwd: env.repo, home: env.home });
  });
});
