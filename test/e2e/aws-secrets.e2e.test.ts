import { expect } from 'chai';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { ListQueuesCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { parseConfig } from '../../common/config.js';
import { agentUserData } from '../../common/fleet/user-data.js';
import { AGENT, CLI, dstack, killAgents, makeRepo, removeAll, tempDir, type CliResult } from '../support/cli.js';
import { ImdsServer } from '../support/imds-server.js';
import { startEmulator, uniqueName, type Emulator } from '../support/fauxqs.js';
import { SecretsManagerFake } from '../support/secrets-manager-fake.js';

const WORKFLOWS = `workflows:
  - name: show
    provider: bash
    env: [FROM_SHELL]
    commands:
      - echo "token=$API_TOKEN shell=$FROM_SHELL end"
      - printf %s "$API_TOKEN" | sha256sum | cut -c1-64
      - printf %s "$FROM_SHELL" | sha256sum | cut -c1-64
`;

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const runName = (r: CliResult): string => /Run ([a-z]+-[a-z]+-\d+)/.exec(r.stdout + r.stderr)?.[1] ?? '';
const CREDS = { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1' };

/** Where each value shows up among `texts` (name -> bytes), by name. */
function holding(texts: Map<string, Buffer>, values: string[]): string[] {
  const found: string[] = [];
  for (const [name, bytes] of texts) {
    // Compressed objects (the code archive, say) are searched unpacked too.
    const unpacked = bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipOrEmpty(bytes) : Buffer.alloc(0);
    for (const v of values) if (bytes.includes(v) || unpacked.includes(v)) found.push(name);
  }
  return found;
}

function gunzipOrEmpty(b: Buffer): Buffer {
  try {
    return gunzipSync(b);
  } catch {
    return Buffer.alloc(0);
  }
}

function filesUnder(dir: string, skip: (rel: string) => boolean): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (skip(relative(dir, p))) continue;
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.set(`file ${relative(dir, p)}`, readFileSync(p));
    }
  };
  walk(dir);
  return out;
}

describe('e2e: secrets in Secrets Manager, backend aws on fauxqs with local agents', function () {
  this.timeout(120_000);
  let emulator: Emulator;
  const sm = new SecretsManagerFake({ pageSize: 2 });
  let repo: string;
  let home: string;
  let bucket: string;
  let queuePrefix: string;
  /** The EC2-style agent's own home (scanned too). */
  let agentHome: string;
  const token = `tok-${randomBytes(12).toString('hex')}`;
  const shellValue = `shell-${randomBytes(12).toString('hex')}`;
  const outputs: string[] = [];
  const cli = async (args: string[], env: Record<string, string> = {}): Promise<CliResult> => {
    const r = await dstack(args, { cwd: repo, home, env: { ...CREDS, ...env } });
    outputs.push(r.stdout, r.stderr);
    return r;
  };
  const setAgents = (mode: 'none' | 'local'): void => {
    const file = join(home, 'config.yaml');
    writeFileSync(file, readFileSync(file, 'utf8').replace(/agents: \w+/, `agents: ${mode}`));
  };

  before(async () => {
    emulator = await startEmulator();
    const smEndpoint = await sm.start();
    repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
    home = tempDir('awssecrets');
    agentHome = tempDir('awssecrets-agent');
    bucket = uniqueName('dstack');
    queuePrefix = uniqueName('q');
    const c = await cli([
      'config', '--backend', 'aws', '--region', 'us-east-1', '--bucket', bucket, '--queue-prefix', queuePrefix, '--sqs-endpoint', emulator.endpoint,
      '--s3-endpoint', emulator.endpoint, '--secretsmanager-endpoint', smEndpoint, '--sts-endpoint', emulator.endpoint, '--max-parallel-jobs', '1', '--agents', 'none',
    ]);
    expect(c.code, c.stderr).to.equal(0);
    const file = join(home, 'config.yaml');
    writeFileSync(file, readFileSync(file, 'utf8').replace('local:\n', 'local:\n  agentIdleTimeoutSec: 20\n  sandbox: off\n'));
  });
  after(async () => {
    await killAgents(home);
    removeAll(repo, home, agentHome);
    await sm.stop();
    await emulator.stop();
  });

  it('adds a secret to Secrets Manager from stdin; list shows its name only', async () => {
    const add = await new Promise<CliResult>((resolve, reject) => {
      const child = execFile(process.execPath, [CLI, 'secrets', 'add', 'API_TOKEN'], { cwd: repo, env: { ...process.env, ...CREDS, DSTACK_HOME: home } }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
      );
      child.on('error', reject);
      child.stdin?.end(`${token}\n`);
    });
    outputs.push(add.stdout, add.stderr);
    expect(add.code, add.stderr).to.equal(0);
    expect(add.stdout).to.equal('Secret API_TOKEN added.\n');
    expect(sm.names()).to.have.length(1);
    expect(sm.names()[0]).to.match(new RegExp(`^${queuePrefix}/repos/[0-9a-f]{64}/API_TOKEN$`));
    const list = await cli(['secrets', 'list']);
    expect(list.stdout).to.equal('API_TOKEN\n');
  });

  it('a queued job holds neither value; the agent gives both to the job; the output and `logs` show *** in their place', async () => {
    // With no agent, the job waits in the queue, where it can be read back.
    const queued = await cli(['run', 'show', '-d'], { FROM_SHELL: shellValue });
    expect(queued.code, queued.stderr).to.equal(0);
    const messages = await everyMessage();
    expect(messages.size, 'the queued job, read back from SQS').to.be.greaterThan(0);
    expect(holding(messages, [token, shellValue])).to.deep.equal([]);
    // The bare env name's value is a per-run secret in Secrets Manager, like the named one.
    expect(sm.names().filter((n) => n.startsWith(`${queuePrefix}/runs/`) && n.endsWith(`/${runName(queued)}/FROM_SHELL`))).to.have.length(1);

    // An agent started by hand (`agents: none`) serves the shared queue; its environment has neither value.
    const byHand = spawn(process.execPath, [AGENT], { env: { ...process.env, ...CREDS, DSTACK_HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] });
    let byHandOut = '';
    byHand.stdout.on('data', (d: Buffer) => (byHandOut += d.toString()));
    byHand.stderr.on('data', (d: Buffer) => (byHandOut += d.toString()));
    try {
      const logs = await cli(['logs', runName(queued), '-f']);
      expect(logs.stdout, byHandOut).to.equal(`token=*** shell=*** end\n${sha(token)}\n${sha(shellValue)}\n`);
    } finally {
      byHand.kill('SIGKILL');
      await new Promise((resolve) => byHand.once('close', resolve));
      outputs.push(byHandOut);
    }
    setAgents('local');
    // This CLI starts a local agent on the owner's own queue: its own environment has neither value.
    const r = await cli(['run', 'show']);
    expect(r.code, r.stderr).to.equal(0);
    // The restart-like second run has no FROM_SHELL of its own: only the named secret reached it.
    expect(r.stdout).to.equal(`token=*** shell= end\n${sha(token)}\n${sha('')}\n`);
  });

  it("an agent configured from EC2 user-data (a profile's queue) reads the secrets under the fleet's prefix", async () => {
    // The user-data an EC2 agent of profile `gpu` boots with: its queue prefix is the profile's, its secrets prefix the fleet's.
    const config = parseConfig(readFileSync(join(home, 'config.yaml'), 'utf8'), 'test', home);
    const userData = agentUserData(config, 'gpu');
    expect(userData).to.include(`queuePrefix: ${queuePrefix}-gpu\n`).and.include(`secretsPrefix: ${queuePrefix}\n`);
    // A CLI that sends to that profile's queue and starts no agent, as the coordinator does for a fleet.
    const edgeHome = tempDir('awssecrets-edge');
    writeFileSync(
      join(edgeHome, 'config.yaml'),
      readFileSync(join(home, 'config.yaml'), 'utf8')
        .replace(/queuePrefix: \S+/, `queuePrefix: ${queuePrefix}-gpu\n  secretsPrefix: ${queuePrefix}`)
        .replace(/agents: \w+/, 'agents: none'),
    );
    // What `dstack run` does for a profile's first job on a fleet: create the profile's queues.
    const provisioned = await dstack(['config', '--queue-prefix', `${queuePrefix}-gpu`], { cwd: repo, home: edgeHome, env: CREDS });
    expect(provisioned.code, provisioned.stderr).to.equal(0);
    const imds = new ImdsServer('i-0123456789abcdef0', userData);
    const imdsUrl = await imds.start();
    const agent = spawn(process.execPath, [AGENT], {
      env: { ...process.env, ...CREDS, DSTACK_HOME: agentHome, DSTACK_AGENT_CONFIG: 'user-data', DSTACK_IMDS_URL: imdsUrl },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let agentOut = '';
    agent.stdout.on('data', (d: Buffer) => (agentOut += d.toString()));
    agent.stderr.on('data', (d: Buffer) => (agentOut += d.toString()));
    try {
      const r = await dstack(['run', 'show'], { cwd: repo, home: edgeHome, env: { ...CREDS, FROM_SHELL: shellValue } });
      outputs.push(r.stdout, r.stderr);
      expect(r.code, r.stderr + agentOut).to.equal(0);
      expect(r.stdout).to.equal(`token=*** shell=*** end\n${sha(token)}\n${sha(shellValue)}\n`);
      expect(imds.hits.get('/latest/user-data')).to.equal(1);
    } finally {
      agent.kill('SIGKILL');
      await new Promise((resolve) => agent.once('close', resolve));
      await imds.stop();
      outputs.push(agentOut);
      removeAll(edgeHome);
    }
  });

  it('leaves no value anywhere but Secrets Manager: S3, every queue and DLQ, the CLI and agent output, DSTACK_HOME', async () => {
    const s3 = new S3Client({ region: 'us-east-1', endpoint: emulator.endpoint, forcePathStyle: true, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
    const objects = new Map<string, Buffer>();
    let ContinuationToken: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken }));
      for (const o of page.Contents ?? []) {
        const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: o.Key }));
        objects.set(`s3 ${o.Key}`, Buffer.from(await got.Body!.transformToByteArray()));
      }
      ContinuationToken = page.NextContinuationToken;
    } while (ContinuationToken);
    expect([...objects.keys()].some((k) => k.includes('/logs/')), 'the runs logs are among the objects').to.equal(true);
    expect(holding(objects, [token, shellValue])).to.deep.equal([]);
    expect(holding(await everyMessage(), [token, shellValue])).to.deep.equal([]);
    expect(outputs.filter((o) => o.includes(token) || o.includes(shellValue))).to.deep.equal([]);
    expect(holding(filesUnder(home, (rel) => rel === join('local', 'secrets')), [token, shellValue])).to.deep.equal([]);
    expect(holding(filesUnder(agentHome, () => false), [token, shellValue])).to.deep.equal([]);
  });

  /** Every message in every queue of this test's prefix, dead-letter queues included, left in place. */
  async function everyMessage(): Promise<Map<string, Buffer>> {
    const sqs = new SQSClient({ region: 'us-east-1', endpoint: emulator.endpoint, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
    const urls = (await sqs.send(new ListQueuesCommand({ QueueNamePrefix: queuePrefix }))).QueueUrls ?? [];
    expect(urls.some((u) => u.endsWith('-dlq'))).to.equal(true);
    const out = new Map<string, Buffer>();
    for (const QueueUrl of urls) {
      // VisibilityTimeout 0: the messages stay visible for the agents; rounds until one brings nothing new.
      for (let round = 0; round < 5; round++) {
        const r = await sqs.send(new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 10, VisibilityTimeout: 0, WaitTimeSeconds: 0, MessageAttributeNames: ['All'] }));
        const before = out.size;
        for (const m of r.Messages ?? []) out.set(`sqs ${QueueUrl} ${m.MessageId}`, Buffer.from(JSON.stringify(m)));
        if (out.size === before) break;
      }
    }
    sqs.destroy();
    return out;
  }
});
