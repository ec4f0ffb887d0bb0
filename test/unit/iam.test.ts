import { expect } from 'chai';
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
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
  // A fleet from a launch template runs and tags instances and passes the agent role.
  CreateFleet: ['ec2:CreateFleet', 'ec2:RunInstances', 'ec2:CreateTags', 'iam:PassRole'],
  GetProducts: ['pricing:GetProducts'],
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
  const r = await build({ entryPoints: [join(ROOT, entry)], bundle: true, write: false, metafile: true, platform: 'node', format: 'esm', logLevel: 'silent', absWorkingDir: ROOT });
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

  it('the agent policy allows what the agent bundle calls, and nothing on EC2', async () => {
    const files = await awsFilesOf('agent/main.ts');
    expect(files).to.not.include('common/aws/ec2-fleet.ts');
    const policy = allowed('agent-policy.json');
    const missing = [...needed(files)].filter(([a]) => !policy.has(a)).map(([a, why]) => `${a} (${why.join(', ')})`);
    expect(missing).to.deep.equal([]);
    expect([...policy].filter((a) => a.startsWith('ec2:') || a.startsWith('iam:'))).to.deep.equal([]);
    // Secrets: the agent bundle holds the reader only, so it can read a secret by name and no more.
    expect(files).to.include('common/aws/secrets-reader.ts').and.not.include('common/aws/secrets-manager.ts');
    // Nothing granted that no code uses: least privilege.
    const used = new Set(needed(files).keys());
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
