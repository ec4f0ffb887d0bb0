import { expect } from 'chai';
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { blobKey, manifestKey } from '../../common/artifacts/manifest.js';
import { CANDIDATES_KEY } from '../../common/gc-candidates.js';
import { LAST_STORE_SWEEP } from '../../common/gc.js';
import { enqueuedKey } from '../../common/orphans.js';
import { endedKey, submittedKey } from '../../common/run-index.js';
import { runKeys, type FinalRecord } from '../../common/runs.js';
import { ROOT } from '../support/cli.js';
import { secretName } from '../../common/aws/secrets-reader.js';

/** The IAM actions each SDK call needs (AWS's service authorization reference). */
const ACTIONS: Record<string, string[]> = {
  // SQS (batch calls are authorized as their single forms)
  CreateQueue: ['sqs:CreateQueue'],
  GetQueueUrl: ['sqs:GetQueueUrl'],
  GetQueueAttributes: ['sqs:GetQueueAttributes'],
  SetQueueAttributes: ['sqs:SetQueueAttributes'],
  SendMessage: ['sqs:SendMessage'],
  SendMessageBatch: ['sqs:SendMessage'],
  ReceiveMessage: ['sqs:ReceiveMessage'],
  ChangeMessageVisibility: ['sqs:ChangeMessageVisibility'],
  DeleteMessage: ['sqs:DeleteMessage'],
  // S3
  HeadBucket: ['s3:ListBucket'],
  CreateBucket: ['s3:CreateBucket'],
  ListObjectsV2: ['s3:ListBucket'],
  HeadObject: ['s3:GetObject'],
  GetObject: ['s3:GetObject'],
  PutObject: ['s3:PutObject'],
  // CopyObject onto itself (Store.touch): reads and writes the same key
  CopyObject: ['s3:GetObject', 's3:PutObject'],
  DeleteObjects: ['s3:DeleteObject'],
  // lib-storage's Upload: CreateMultipartUpload, UploadPart, CompleteMultipartUpload (s3:PutObject), and an abort on failure
  Upload: ['s3:PutObject', 's3:AbortMultipartUpload'],
  // Secrets Manager (ListSecrets cannot be limited to names: it takes Resource "*")
  CreateSecret: ['secretsmanager:CreateSecret'],
  PutSecretValue: ['secretsmanager:PutSecretValue'],
  GetSecretValue: ['secretsmanager:GetSecretValue'],
  ListSecrets: ['secretsmanager:ListSecrets'],
  DeleteSecret: ['secretsmanager:DeleteSecret'],
  // EC2 and the Pricing API
  DescribeInstanceTypes: ['ec2:DescribeInstanceTypes'],
  DescribeSpotPriceHistory: ['ec2:DescribeSpotPriceHistory'],
  DescribeImages: ['ec2:DescribeImages'],
  DescribeInstances: ['ec2:DescribeInstances'],
  CreateLaunchTemplate: ['ec2:CreateLaunchTemplate', 'ec2:CreateTags'],
  // A fleet from a launch template runs and tags instances and passes the agent role; the first
  // fleet of an account creates EC2 Fleet's and Spot's service-linked roles.
  CreateFleet: ['ec2:CreateFleet', 'ec2:RunInstances', 'ec2:CreateTags', 'iam:PassRole', 'iam:CreateServiceLinkedRole'],
  GetProducts: ['pricing:GetProducts'],
  // The fleet's security group for the agents' SSH port (tagged at creation, so its rules can be limited to it).
  DescribeSecurityGroups: ['ec2:DescribeSecurityGroups'],
  DescribeSubnets: ['ec2:DescribeSubnets'],
  DescribeVpcs: ['ec2:DescribeVpcs'],
  CreateSecurityGroup: ['ec2:CreateSecurityGroup', 'ec2:CreateTags'],
  AuthorizeSecurityGroupIngress: ['ec2:AuthorizeSecurityGroupIngress'],
  RevokeSecurityGroupIngress: ['ec2:RevokeSecurityGroupIngress'],
  // STS: who owns the runs; AWS allows it to every caller, even with an explicit deny.
  GetCallerIdentity: [],
};

/** The SDK calls a source file makes: `new XCommand(`, `paginateX(` and lib-storage's `new Upload(`. */
function callsIn(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const calls = [...text.matchAll(/new ([A-Z][A-Za-z0-9]+)Command\(/g), ...text.matchAll(/paginate([A-Z][A-Za-z0-9]+)\(/g)].map((m) => m[1] ?? '');
  if (/new Upload\(/.test(text)) calls.push('Upload');
  return calls;
}

/** The files under common/aws/ that end up in a bundle, from esbuild's metafile. */
async function awsFilesOf(entry: string): Promise<string[]> {
  const r = await build({ entryPoints: [join(ROOT, entry)], bundle: true, write: false, metafile: true, platform: 'node', format: 'esm', logLevel: 'silent', external: ['*.node'], absWorkingDir: ROOT });
  return Object.keys(r.metafile.inputs).filter((f) => f.startsWith('common/aws/') && f.endsWith('.ts'));
}

function allowed(policyFile: string): Set<string> {
  const policy = JSON.parse(readFileSync(join(ROOT, 'ami', 'iam', policyFile), 'utf8')) as { Statement: Array<{ Effect: string; Action: string | string[] }> };
  return new Set(policy.Statement.filter((s) => s.Effect === 'Allow').flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action])));
}

function needed(files: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const file of files) {
    for (const call of callsIn(file)) {
      const actions = ACTIONS[call];
      expect(actions, `${file} calls ${call}: add it to ACTIONS here and to the policies in ami/iam/`).to.not.equal(undefined);
      for (const a of actions ?? []) out.set(a, [...(out.get(a) ?? []), `${file}: ${call}`]);
    }
  }
  return out;
}

describe('IAM policies in ami/iam/ cover every AWS call the code makes', function () {
  this.timeout(30_000);

  it('the coordinator policy allows every action the CLI bundle can call', async () => {
    const files = await awsFilesOf('coordinator/main.ts');
    expect(files).to.include.members(['common/aws/ec2-fleet.ts', 'common/aws/sqs-queue.ts', 'common/aws/s3-store.ts']);
    const policy = allowed('coordinator-policy.json');
    const missing = [...needed(files)].filter(([a]) => !policy.has(a)).map(([a, why]) => `${a} (${why.join(', ')})`);
    expect(missing).to.deep.equal([]);
  });

  it('the coordinator policy allows nothing that no call of the CLI bundle needs', async () => {
    const used = new Set(needed(await awsFilesOf('coordinator/main.ts')).keys());
    expect([...allowed('coordinator-policy.json')].filter((a) => !used.has(a))).to.deep.equal([]);
  });

  it('the agent policy allows what the agent bundle calls, and nothing on EC2', async () => {
    const files = await awsFilesOf('agent/main.ts');
    expect(files).to.not.include('common/aws/ec2-fleet.ts');
    const policy = allowed('agent-policy.json');
    const need = needed(files);
    // Provisioning is the CLI's (`dstack config`): the agent bundle names none of it.
    expect([...need.keys()].filter((a) => AGENT_PROVISIONING.includes(a))).to.deep.equal([]);
    const missing = [...need].filter(([a]) => !policy.has(a)).map(([a, why]) => `${a} (${why.join(', ')})`);
    expect(missing).to.deep.equal([]);
    expect([...policy].filter((a) => a.startsWith('ec2:') || a.startsWith('iam:'))).to.deep.equal([]);
    // Secrets: the agent bundle holds the reader only, so it can read a secret by name and no more.
    expect(files).to.include('common/aws/secrets-reader.ts').and.not.include('common/aws/secrets-manager.ts');
    // Nothing granted that no code uses: least privilege.
    const used = new Set(need.keys());
    expect([...policy].filter((a) => !used.has(a))).to.deep.equal([]);
  });

  it("the Secrets statements name the store's secrets, repo and run values, under the default prefix", () => {
    for (const file of ['agent-policy.json', 'coordinator-policy.json']) {
      const policy = JSON.parse(readFileSync(join(ROOT, 'ami', 'iam', file), 'utf8')) as { Statement: Array<{ Sid?: string; Resource: string }> };
      const resource = policy.Statement.find((x) => x.Sid === 'Secrets')?.Resource ?? '';
      const glob = new RegExp(`^${resource.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\/]/g, '\\$&')).join('.*')}$`);
      // A secret's ARN is its name and a 6-character suffix.
      const arn = (name: string): string => `arn:aws:secretsmanager:eu-west-1:123456789012:secret:${name}-AbC123`;
      for (const scope of [{ repoId: 'r' }, { repoId: 'r', runName: 'lazy-owl-1' }]) {
        expect(arn(secretName('dstack', scope, 'TOKEN')), file).to.match(glob);
      }
      expect(arn('prod/db-password'), file).to.not.match(glob);
    }
  });
});

/** Provisioning calls the agent never needs (the bucket and queues exist before any agent runs). */
const AGENT_PROVISIONING = ['s3:CreateBucket', 'sqs:CreateQueue', 'sqs:SetQueueAttributes'];

interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource: string | string[];
  Condition?: Record<string, Record<string, string | string[]>>;
}

function statements(policyFile: string): Statement[] {
  return (JSON.parse(readFileSync(join(ROOT, 'ami', 'iam', policyFile), 'utf8')) as { Statement: Statement[] }).Statement;
}

const list = (x: string | string[]): string[] => (Array.isArray(x) ? x : [x]);

/** IAM's wildcards: `*` any run of characters (`/` included), `?` one character. */
function iamMatch(pattern: string, value: string): boolean {
  const re = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${re}$`).test(value);
}

/** A request as IAM sees it: the action, the resource, and the condition keys it carries. */
interface Request {
  action: string;
  resource?: string;
  context?: Record<string, string | string[]>;
}

/** Whether some Allow statement grants the request (the operators the policies use: Null, StringEquals, StringLike). */
function grants(policyFile: string, r: Request): boolean {
  return statements(policyFile).some((s) => {
    if (s.Effect !== 'Allow' || !list(s.Action).includes(r.action)) return false;
    if (r.resource !== undefined && !list(s.Resource).some((p) => iamMatch(p, r.resource!))) return false;
    return Object.entries(s.Condition ?? {}).every(([op, conds]) =>
      Object.entries(conds).every(([key, want]) => {
        const have = r.context?.[key];
        if (op === 'Null') return (have === undefined) === (want === 'true');
        if (have === undefined) return false;
        if (op === 'StringEquals') return list(have).every((h) => list(want).includes(h));
        if (op === 'StringLike') return list(have).every((h) => list(want).some((w) => iamMatch(w, h)));
        throw new Error(`condition operator ${op} is not modelled here: add it`);
      }),
    );
  });
}

/** The resources the statements granting `action` name. */
function resourcesOf(policyFile: string, action: string): string[] {
  return statements(policyFile)
    .filter((s) => s.Effect === 'Allow' && list(s.Action).includes(action))
    .flatMap((s) => list(s.Resource));
}

const object = (key: string): string => `arn:aws:s3:::BUCKET/dstack/${key}`;
const SHA = 'ab'.repeat(32);
const FINAL: FinalRecord = { status: 'done', exitCode: 0, reason: null, finishedAt: '2026-11-25T00:00:00.000Z', attempt: 1 };

/**
 * Every Store write in the agent bundle (after tree shaking), by its receiver, method and first
 * argument as esbuild prints them, with the key it writes for a sample run (the key functions the
 * agent calls) or null when the agent never reaches it. A new write site fails the test below
 * until it is listed here, and so until the policy is looked at.
 */
const AGENT_WRITES: Record<string, { keys: string[]; why: string } | null> = {
  'store.put(attemptKey': { keys: [runKeys.attempt('R', 'run-1', 1)], why: 'worker: the attempt record and its heartbeat' },
  'this.store.put(key': { keys: [runKeys.logChunk('R', 'run-1', 1, 0)], why: 'log shipper: the job\'s output' },
  'this.store.put(runKeys.artifacts': { keys: [runKeys.artifacts('R', 'run-1')], why: 'the artifact index' },
  'store.put(runKeys.final': { keys: [runKeys.final('R', 'run-1')], why: 'settleRun: the final status' },
  'store.put(endedKey': { keys: [endedKey('R', 'run-1', FINAL)], why: 'settleRun: the ended index key' },
  'store.put(runKeys.cache': { keys: [runKeys.cache('R', SHA)], why: 'worker: the cache entry of a cached job' },
  'store.put(blobKey': { keys: [blobKey(SHA)], why: 'artifact save: a blob' },
  'store.touch(blobKey': { keys: [blobKey(SHA)], why: 'artifact save: a reused blob (CopyObject onto itself)' },
  'store.touch(manifestKey': { keys: [manifestKey(SHA)], why: 'artifact save: a reused manifest' },
  'store.put(manifestKey': { keys: [manifestKey(SHA)], why: 'artifact save: a manifest' },
  'store.put(CANDIDATES_KEY': { keys: [CANDIDATES_KEY], why: 'gc at start: the unreferenced objects seen' },
  'o.store.put(LAST_STORE_SWEEP': { keys: [LAST_STORE_SWEEP], why: 'gc at start: when the store was last swept' },
  'store.put(indexKey': { keys: [submittedKey('R', { submittedAt: FINAL.finishedAt, runName: 'run-1', workflow: 'w', maxAttempts: 3 })], why: 'gc at start: a missing index key' },
  // SqsQueue.send's claim check: the agent never sends a new job (checked below).
  'this.o.claims.put(key': null,
};

/** Every Store delete in the agent bundle, as AGENT_WRITES. */
const AGENT_DELETES: Record<string, { keys: string[]; why: string } | null> = {
  'store.delete(items.map': { keys: [blobKey(SHA), manifestKey(SHA)], why: 'gc at start: blobs and manifests no run references' },
};

/** Keys an agent must never write: what the submitter and the user decide. */
const NOT_THE_AGENTS = [
  runKeys.record('R', 'run-1'),
  runKeys.stop('R', 'run-1'),
  enqueuedKey('R', 'run-1'),
  runKeys.tag('R', 'best'),
  'claims/5b4f.json',
  'secrets/R/TOKEN',
];

/** The unminified agent bundle, as esbuild tree-shakes it for `npm run build`. */
async function agentBundle(): Promise<string> {
  const r = await build({ entryPoints: [join(ROOT, 'agent/main.ts')], bundle: true, write: false, platform: 'node', format: 'esm', logLevel: 'silent', absWorkingDir: ROOT, packages: 'external' });
  return r.outputFiles[0]?.text ?? '';
}

/** Store calls in the bundle, as `receiver.method(firstArg` up to its first parenthesis; renamed identifiers (`runKeys2`) get their names back. */
function storeCalls(bundle: string, methods: string[]): string[] {
  const re = new RegExp(`([A-Za-z_$][\\w$.]*)\\.(${methods.join('|')})\\(\\s*([\\w$.]*)`, 'g');
  return [...bundle.matchAll(re)]
    .filter((m) => /(store|claims)$/i.test(m[1] ?? ''))
    .map((m) => `${m[1]}.${m[2]}(${m[3]}`.replace(/([A-Za-z_])\d+\b/g, '$1'));
}

describe('IAM: the agent writes only where it must, the fleet launches only tagged', function () {
  this.timeout(30_000);

  it('every Store write and delete in the agent bundle is listed, with the keys it writes', async () => {
    const bundle = await agentBundle();
    const writes = [...new Set(storeCalls(bundle, ['put', 'putStream', 'touch']))];
    const deletes = [...new Set(storeCalls(bundle, ['delete']))];
    expect(writes.filter((w) => !(w in AGENT_WRITES)), 'a new Store write in the agent: list it in AGENT_WRITES and check the agent policy').to.deep.equal([]);
    expect(deletes.filter((d) => !(d in AGENT_DELETES)), 'a new Store delete in the agent: list it in AGENT_DELETES').to.deep.equal([]);
    expect(Object.keys(AGENT_WRITES).filter((w) => !writes.includes(w)), 'listed but no longer in the bundle: remove from AGENT_WRITES').to.deep.equal([]);
    // The claim write is SqsQueue.send's, and the agent sends no new job.
    expect(bundle).to.not.match(/[^.\w]queue\w*\.send\(/);
  });

  it('the agent may put exactly under the prefixes it writes, and delete only unreferenced artifacts', () => {
    const writes = Object.values(AGENT_WRITES).flatMap((w) => w?.keys ?? []);
    const deletes = Object.values(AGENT_DELETES).flatMap((d) => d?.keys ?? []);
    for (const [action, keys] of [
      ['s3:PutObject', writes],
      ['s3:AbortMultipartUpload', writes],
      ['s3:DeleteObject', deletes],
    ] as const) {
      expect(keys.filter((k) => !grants('agent-policy.json', { action, resource: object(k) })), `${action}: keys the agent writes but may not`).to.deep.equal([]);
      // Each granted resource is one the agent writes: no wider grant than the writes need.
      expect(resourcesOf('agent-policy.json', action).filter((p) => !keys.some((k) => iamMatch(p, object(k)))), `${action}: resources no write needs`).to.deep.equal([]);
      expect(NOT_THE_AGENTS.filter((k) => grants('agent-policy.json', { action, resource: object(k) })), `${action}: keys that are not the agent's`).to.deep.equal([]);
    }
    expect(NOT_THE_AGENTS.filter((k) => grants('agent-policy.json', { action: 's3:DeleteObject', resource: object(k) }))).to.deep.equal([]);
    expect(deletes.every((k) => k.startsWith('blobs/') || k.startsWith('manifests/'))).to.equal(true);
  });

  it('CreateFleet, RunInstances and CreateLaunchTemplate need the dstack:profile request tag; CreateTags only while launching', () => {
    const tagged = { 'aws:RequestTag/dstack:profile': 'p1', 'aws:TagKeys': ['Name', 'dstack:fleet', 'dstack:profile', 'dstack:role'] };
    for (const action of ['ec2:CreateFleet', 'ec2:RunInstances', 'ec2:CreateLaunchTemplate']) {
      expect(grants('coordinator-policy.json', { action, context: tagged }), `${action} with the tag`).to.equal(true);
      expect(grants('coordinator-policy.json', { action, context: { 'aws:RequestTag/Name': 'x' } }), `${action} without the tag`).to.equal(false);
    }
    for (const createAction of ['CreateFleet', 'RunInstances', 'CreateLaunchTemplate']) {
      expect(grants('coordinator-policy.json', { action: 'ec2:CreateTags', context: { 'ec2:CreateAction': createAction } }), createAction).to.equal(true);
    }
    // Tagging an existing resource (someone else's instance, say) is not allowed.
    expect(grants('coordinator-policy.json', { action: 'ec2:CreateTags' })).to.equal(false);
  });

  it("the SSH port's rules change only on the fleet's own security group (tagged dstack:role=agent when it was made)", () => {
    expect(grants('coordinator-policy.json', { action: 'ec2:CreateSecurityGroup', context: { 'aws:RequestTag/dstack:role': 'agent' } })).to.equal(true);
    expect(grants('coordinator-policy.json', { action: 'ec2:CreateSecurityGroup', context: {} })).to.equal(false);
    expect(grants('coordinator-policy.json', { action: 'ec2:CreateTags', context: { 'ec2:CreateAction': 'CreateSecurityGroup' } })).to.equal(true);
    for (const action of ['ec2:AuthorizeSecurityGroupIngress', 'ec2:RevokeSecurityGroupIngress']) {
      expect(grants('coordinator-policy.json', { action, context: { 'aws:ResourceTag/dstack:role': 'agent' } }), `${action} on the fleet's group`).to.equal(true);
      expect(grants('coordinator-policy.json', { action, context: {} }), `${action} on another group`).to.equal(false);
    }
  });
});
