import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { GetQueueAttributesCommand, GetQueueUrlCommand, SQSClient } from '@aws-sdk/client-sqs';
import { parseDocument } from 'yaml';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, dstack, killAgents, makeRepo, removeAll, tempDir, waitFor } from '../support/cli.js';
import { startEmulator, uniqueName, type Emulator } from '../support/fauxqs.js';
import { S3Proxy } from '../support/s3-proxy.js';
import { SecretsManagerFake } from '../support/secrets-manager-fake.js';
import { ImdsServer } from '../support/imds-server.js';
import { alive } from '../support/process.js';
import { AGENT } from '../support/cli.js';
import { ownerQueueId } from '../../common/owner.js';

/** Who fauxqs's STS says every caller is. */
const FAUXQS_OWNER = 'arn:aws:iam::000000000000:root';

const WORKFLOWS = `workflows:
  - name: hello
    provider: bash
    commands:
      - echo "Hello from $RUN_NAME"
  - name: produce
    provider: bash
    commands:
      - mkdir -p output
      - head -c 3000000 /dev/urandom > output/data.bin
      - sha256sum output/data.bin | cut -c1-64
    artifacts: [output]
  - name: consume
    provider: bash
    deps:
      - workflow: produce
    commands:
      - sha256sum output/data.bin | cut -c1-64
  - name: long
    provider: bash
    env: [MARKER]
    commands:
      - echo start >> "$MARKER"
      - sleep 14
      - echo end >> "$MARKER"
  - name: slow
    provider: bash
    env: [MARKER]
    commands:
      - echo start >> "$MARKER"
      - echo "$$" >> "$MARKER.pids"
      - echo started
      - sleep 5
      - echo end >> "$MARKER"
`;

const nameOf = (text: string): string => /Run ([a-z]+-[a-z]+-\d+)/.exec(text)?.[1] ?? '';

describe('e2e: backend aws on fauxqs, agents as local processes', function () {
  this.timeout(120_000);
  let emulator: Emulator;
  let proxy: S3Proxy;
  // Bare env names (MARKER) are per-run secrets: on AWS they go to Secrets Manager.
  const secretsManager = new SecretsManagerFake();
  let repo: string;
  let home: string;
  let env: Record<string, string>;
  const run = (args: string[], extra: Record<string, string> = {}) => dstack(args, { cwd: repo, home, env: { ...env, ...extra } });

  before(async () => {
    emulator = await startEmulator();
    proxy = new S3Proxy(emulator.endpoint);
    const s3 = await proxy.start();
    const sm = await secretsManager.start();
    repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
    home = tempDir('awshome');
    env = { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1' };
    const c = await run([
      'config', '--backend', 'aws', '--region', 'us-east-1', '--bucket', uniqueName('dstack'), '--queue-prefix', uniqueName('q'),
      '--sqs-endpoint', emulator.endpoint, '--s3-endpoint', s3, '--sts-endpoint', emulator.endpoint, '--secretsmanager-endpoint', sm, '--max-parallel-jobs', '2', '--agents', 'local',
    ]);
    expect(c.code, c.stderr).to.equal(0);
    expect(c.stdout).to.match(/^Saved .*config\.yaml \(backend aws: bucket dstack-[0-9a-f]+ in us-east-1, queues q-[0-9a-f]+-jobs\(-dlq\)\)\.\n$/);
    // Short leases so that a killed agent's job comes back quickly.
    const file = join(home, 'config.yaml');
    const text = readFileSync(file, 'utf8').replace('local:\n', 'local:\n  visibilityTimeoutSec: 3\n  agentIdleTimeoutSec: 30\n  stopGraceSec: 1\n  sandbox: off\n');
    await import('node:fs/promises').then((fs) => fs.writeFile(file, text));
  });
  after(async () => {
    await killAgents(home);
    removeAll(repo, home);
    await proxy.stop();
    await secretsManager.stop();
    await emulator.stop();
  });

  it('runs a workflow end to end: output, ps, logs', async () => {
    const r = await run(['run', 'hello']);
    expect(r.code, r.stderr).to.equal(0);
    const name = nameOf(r.stderr);
    expect(r.stdout).to.equal(`Hello from ${name}\n`);
    expect((await run(['ps', '-a'])).stdout).to.match(new RegExp(`^${name}\\s+hello\\s+\\S+ ?\\S*\\s+Done`, 'm'));
    expect((await run(['logs', name])).stdout).to.equal(`Hello from ${name}\n`);
  });

  it('saves artifacts to S3 through injected 5xx answers and dropped connections; deps and download see whole files', async () => {
    proxy.inject('500', 3, (req) => req.method === 'PUT' && (req.url ?? '').includes('/blobs/'));
    proxy.inject('drop', 2, (req) => req.method === 'PUT' && (req.url ?? '').includes('/blobs/'));
    const before = proxy.injected;
    const p = await run(['run', 'produce']);
    expect(p.code, p.stderr).to.equal(0);
    expect(proxy.injected - before).to.equal(5);
    const hash = p.stdout.trim();
    const c = await run(['run', 'consume']);
    expect(c.stdout.trim()).to.equal(hash);
    const list = await run(['artifacts', 'list', nameOf(p.stderr)]);
    expect(list.stdout).to.match(/^output\s+1\s+2\.9 MB$/m);
  });

  it('kill -9 of the agent holding a job: another agent finishes it, once', async () => {
    const scratch = tempDir('marker');
    const marker = join(scratch, 'marker');
    const child = spawn(process.execPath, [CLI, 'run', 'slow'], { cwd: repo, env: { ...process.env, ...env, DSTACK_HOME: home, MARKER: marker }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
    await waitFor(() => (out.includes('started') ? true : undefined), 30_000, 'the job to start');
    const name = nameOf(err);
    const view = JSON.parse((await run(['ps', name, '--json'])).stdout) as Array<{ attempts: Array<{ agentId: string }> }>;
    const agentId = view[0]?.attempts[0]?.agentId ?? '';
    const pid = (JSON.parse(readFileSync(join(home, 'local', 'agents', `${agentId}.json`), 'utf8')) as { pid: number }).pid;
    process.kill(pid, 'SIGKILL');
    expect(await exited, err).to.equal(0);
    const final = JSON.parse((await run(['ps', name, '--json'])).stdout) as Array<{ status: string; attempts: Array<{ agentId: string }> }>;
    expect(final[0]?.status).to.equal('done');
    expect(final[0]?.attempts).to.have.length(2);
    // Once every attempt's job shell is gone, none can add to the marker.
    const pids = readFileSync(`${marker}.pids`, 'utf8').trim().split('\n').map(Number);
    await waitFor(() => (pids.every((p) => !alive(p)) ? true : undefined), 15_000, "the attempts' job shells to end");
    expect(readFileSync(marker, 'utf8')).to.equal('start\nstart\nend\n');
    removeAll(scratch);
  });

  it('an agent configured from EC2 user-data (IMDSv2) takes jobs, named by its instance id', async () => {
    // A second queue served only by this agent: the CLI starts no agents of its own (`agents: none`).
    const edgeHome = tempDir('edgehome');
    const agentHome = tempDir('agenthome');
    const base = readFileSync(join(home, 'config.yaml'), 'utf8');
    const udPrefix = uniqueName('ud');
    const config = base.replace(/queuePrefix: \S+/, `queuePrefix: ${udPrefix}`).replace('agents: local', 'agents: none');
    await import('node:fs/promises').then((fs) => fs.writeFile(join(edgeHome, 'config.yaml'), config));
    // `dstack config` creates the new queues; the agent and `run` only open them.
    const c = await dstack(['config', '--queue-prefix', udPrefix], { cwd: repo, home: edgeHome, env });
    expect(c.code, c.stderr).to.equal(0);
    const imds = new ImdsServer('i-0123456789abcdef0', config);
    const imdsUrl = await imds.start();
    const agent = spawn(process.execPath, [AGENT], {
      env: { ...process.env, ...env, DSTACK_HOME: agentHome, DSTACK_AGENT_CONFIG: 'user-data', DSTACK_IMDS_URL: imdsUrl },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let agentOut = '';
    agent.stdout.on('data', (d: Buffer) => (agentOut += d.toString()));
    agent.stderr.on('data', (d: Buffer) => (agentOut += d.toString()));
    try {
      const r = await dstack(['run', 'hello'], { cwd: repo, home: edgeHome, env });
      expect(r.code, r.stderr + agentOut).to.equal(0);
      const name = nameOf(r.stderr);
      expect(r.stdout).to.equal(`Hello from ${name}\n`);
      const view = JSON.parse((await dstack(['ps', name, '--json'], { cwd: repo, home: edgeHome, env })).stdout) as Array<{ attempts: Array<{ agentId: string }> }>;
      expect(view[0]?.attempts.map((a) => a.agentId)).to.deep.equal(['i-0123456789abcdef0']);
      expect(agentOut).to.include('"agentId":"i-0123456789abcdef0"');
      expect(imds.hits.get('/latest/user-data')).to.equal(1);
    } finally {
      agent.kill('SIGKILL');
      await imds.stop();
      removeAll(edgeHome, agentHome);
    }
  });

  it('an agent whose instance has no user-data says so in one line and exits 1', async () => {
    const imds = new ImdsServer('i-0fedcba9876543210', null);
    const imdsUrl = await imds.start();
    const agentHome = tempDir('agenthome');
    const agent = spawn(process.execPath, [AGENT], { env: { ...process.env, DSTACK_HOME: agentHome, DSTACK_AGENT_CONFIG: 'user-data', DSTACK_IMDS_URL: imdsUrl }, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    agent.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number>((resolve) => agent.on('close', (c) => resolve(c ?? -1)));
    await imds.stop();
    removeAll(agentHome);
    expect(code).to.equal(1);
    expect(err.trim().split('\n')).to.have.length(1);
    expect(err).to.include(`this instance has no user-data at ${imdsUrl}`);
  });

  it('a job longer than the visibility cap (6 s here, 12 h on SQS) keeps its lease: it runs once, on one agent', async () => {
    const capHome = tempDir('caphome');
    const doc = parseDocument(readFileSync(join(home, 'config.yaml'), 'utf8'));
    const prefix = uniqueName('cap');
    doc.setIn(['aws', 'queuePrefix'], prefix);
    doc.setIn(['aws', 'visibilityCapSec'], 6);
    doc.setIn(['local', 'visibilityTimeoutSec'], 2);
    await import('node:fs/promises').then((fs) => fs.writeFile(join(capHome, 'config.yaml'), doc.toString()));
    const c = await dstack(['config', '--queue-prefix', prefix], { cwd: repo, home: capHome, env });
    expect(c.code, c.stderr).to.equal(0);
    const scratch = tempDir('marker');
    const marker = join(scratch, 'marker');
    try {
      // Two agents: the second receives every handed-over copy while the first still holds the job.
      const r = await dstack(['run', 'long', '-d'], { cwd: repo, home: capHome, env: { ...env, MARKER: marker } });
      expect(r.code, r.stderr).to.equal(0);
      const name = nameOf(r.stdout + r.stderr);
      const d = await dstack(['run', 'hello', '-d'], { cwd: repo, home: capHome, env });
      expect(d.code, d.stderr).to.equal(0);
      const final = await waitFor(async () => {
        const v = JSON.parse((await dstack(['ps', name, '--json'], { cwd: repo, home: capHome, env })).stdout) as Array<{ status: string; attempts: Array<{ agentId: string }> }>;
        return v[0]?.status === 'done' ? v[0] : undefined;
      }, 60_000, 'the long job to finish');
      expect(final.attempts).to.have.length(1);
      expect(readFileSync(marker, 'utf8')).to.equal('start\nend\n');
      // The last handed-over copy is dropped by whoever receives it: the queue drains. With `agents: local` the
      // queue is the owner's: fauxqs's STS answers every caller with its account's root.
      const sqs = new SQSClient({ region: 'us-east-1', endpoint: emulator.endpoint });
      const { QueueUrl } = await sqs.send(new GetQueueUrlCommand({ QueueName: `${prefix}-${ownerQueueId(FAUXQS_OWNER)}-jobs` }));
      await waitFor(async () => {
        const a = await sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['All'] }));
        const n = (['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible', 'ApproximateNumberOfMessagesDelayed'] as const).map((k) => Number(a.Attributes?.[k] ?? 0));
        return n.every((x) => x === 0) ? true : undefined;
      }, 30_000, 'the queue to drain');
      sqs.destroy();
      // The hand-over really happened: the other agent received copies and parked them, then dropped the last.
      const logs = readdirSync(join(capHome, 'local', 'logs')).map((f) => readFileSync(join(capHome, 'local', 'logs', f), 'utf8')).join('');
      expect(logs).to.match(new RegExp(`"runName":"${name}"[^\\n]*job is held by a live agent: parking the message|job is held by a live agent: parking the message[^\\n]*"runName":"${name}"`));
      expect(logs).to.include('job already finished: dropping the redelivered message');
    } finally {
      await killAgents(capHome);
      removeAll(capHome, scratch);
    }
  });
});
