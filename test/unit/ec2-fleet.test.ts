import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AuthorizeSecurityGroupIngressCommand,
  CreateSecurityGroupCommand,
  DescribeSecurityGroupsCommand,
  DescribeSubnetsCommand,
  RevokeSecurityGroupIngressCommand,
  CreateFleetCommand,
  CreateLaunchTemplateCommand,
  DescribeImagesCommand,
  DescribeInstancesCommand,
  DescribeInstanceTypesCommand,
  DescribeSpotPriceHistoryCommand,
  EC2Client,
  type DescribeInstanceTypesCommandOutput,
  type DescribeSpotPriceHistoryCommandOutput,
} from '@aws-sdk/client-ec2';
import { GetProductsCommand, PricingClient, type GetProductsCommandOutput } from '@aws-sdk/client-pricing';
import { mockClient } from 'aws-sdk-client-mock';
import { parse } from 'yaml';
import { Ec2Catalog } from '../../common/aws/ec2-catalog.js';
import { Ec2Fleet } from '../../common/aws/ec2-fleet.js';
import { parseConfig } from '../../common/config.js';
import { ConfigError, ResourceError, TransportError } from '../../common/errors.js';
import { profileIdOf } from '../../common/fleet/match.js';
import { agentUserData } from '../../common/fleet/user-data.js';
import type { ResourceSpec } from '../../common/spec/job-spec.js';
import { makeRepo, removeAll, ROOT, tempDir } from '../support/cli.js';
import { coordinatorContext } from '../support/coordinator.js';
import { runCommand } from '../../coordinator/commands/run.js';

const fixture = <T>(name: string): T => JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'ec2', name), 'utf8')) as T;
const typePages = fixture<DescribeInstanceTypesCommandOutput[]>('describe-instance-types.json');
const spotHistory = fixture<DescribeSpotPriceHistoryCommandOutput>('describe-spot-price-history.json');
const pricingPages = fixture<GetProductsCommandOutput[]>('pricing-get-products.json');

const ec2Mock = mockClient(EC2Client);
let typeTokens: Array<string | undefined> = [];
const pricingMock = mockClient(PricingClient);

const CONFIG = parseConfig(
  'backend: aws\naws:\n  region: us-east-1\n  bucket: ml-team-dstack\n  queuePrefix: dstack\n  subnet: subnet-0abc\n  maxInstances: 3\n',
  'test',
  '/tmp/unused',
);

function fleet(o: { ami?: string; maxInstances?: number; ssh?: { port: number; allowedCidrs: string[] } } = {}): Ec2Fleet {
  const ec2 = new EC2Client({ region: 'us-east-1' });
  const pricing = new PricingClient({ region: 'us-east-1' });
  return new Ec2Fleet({
    ec2,
    catalog: new Ec2Catalog(ec2, pricing, 'us-east-1'),
    fleet: 'dstack',
    maxInstances: o.maxInstances ?? 3,
    subnet: 'subnet-0abc',
    instanceProfile: 'dstack-agent',
    ...(o.ami ? { ami: o.ami } : {}),
    ...(o.ssh ? { ssh: o.ssh } : {}),
    userData: (id) => agentUserData(CONFIG, id),
    nowMs: () => Date.UTC(2026, 10, 23, 12, 0, 0),
  });
}

/** The tags every fleet resource carries; `dstack:profile` is the request tag the coordinator policy requires. */
const tagsOf = (profileId: string): Array<{ Key: string; Value: string }> => [
  { Key: 'Name', Value: `dstack-agent-${profileId}` },
  { Key: 'dstack:fleet', Value: 'dstack' },
  { Key: 'dstack:profile', Value: profileId },
  { Key: 'dstack:role', Value: 'agent' },
];

const A10G_SPOT: ResourceSpec = { gpu: { count: 1, name: 'A10G' }, interruptible: true, local: false };

describe('EC2 fleet (aws-sdk-client-mock, recorded-shape EC2 responses)', () => {
  before(() => {
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
  });
  beforeEach(() => {
    ec2Mock.reset();
    pricingMock.reset();
    // The SDK's paginator reuses one input object, so the token each request carried is noted as it is sent.
    typeTokens = [];
    ec2Mock.on(DescribeInstanceTypesCommand).callsFake((input: { NextToken?: string }) => {
      typeTokens.push(input.NextToken);
      return input.NextToken === 'page2' ? typePages[1]! : typePages[0]!;
    });
    ec2Mock.on(DescribeSpotPriceHistoryCommand).resolves(spotHistory);
    ec2Mock.on(DescribeImagesCommand).resolves({ Images: [{ ImageId: 'ami-0agent', CreationDate: '2026-11-01T00:00:00.000Z' }] });
    pricingMock.on(GetProductsCommand).resolves(pricingPages[0]!);
    pricingMock.on(GetProductsCommand, { NextToken: pricingPages[0]!.NextToken! }).resolves(pricingPages[1]!);
  });

  it('offers the cheapest A10G spot types, at the lowest current spot price over the zones', async () => {
    const p = await fleet().plan(A10G_SPOT);
    expect(p.profileId).to.equal(profileIdOf(A10G_SPOT));
    expect(p.offers.map((o) => o.instanceType)).to.deep.equal(['g5.xlarge', 'g5.2xlarge', 'g5.4xlarge', 'g5.8xlarge', 'g5.12xlarge', 'g5.48xlarge']);
    expect(p.offers[0]).to.deep.include({ market: 'spot', pricePerHour: 0.420081, vcpus: 4, memoryMiB: 16384 });
    expect(p.offers[0]?.gpu).to.deep.equal({ name: 'A10G', count: 1, memoryMiB: 24576 });
    // Both pages of instance types were read, with the filters EC2 documents.
    const calls = ec2Mock.commandCalls(DescribeInstanceTypesCommand);
    expect(calls).to.have.length(2);
    expect(typeTokens).to.deep.equal([undefined, 'page2']);
    expect(calls[0]?.args[0].input.Filters).to.deep.equal([
      { Name: 'current-generation', Values: ['true'] },
      { Name: 'processor-info.supported-architecture', Values: ['x86_64'] },
    ]);
    expect(ec2Mock.commandCalls(DescribeSpotPriceHistoryCommand)[0]?.args[0].input).to.deep.include({ ProductDescriptions: ['Linux/UNIX'] });
    expect(pricingMock.commandCalls(GetProductsCommand)).to.have.length(0);
  });

  it('prices on-demand requests from the Pricing API (Linux, shared tenancy, this region)', async () => {
    const p = await fleet().plan({ gpu: { count: 4, memoryMiB: 16384 }, memoryMiB: 150_000, interruptible: false, local: false });
    expect(p.offers.map((o) => [o.instanceType, o.pricePerHour])).to.deep.equal([
      ['g4dn.12xlarge', 3.912],
      ['g5.12xlarge', 5.672],
      ['p3.8xlarge', 12.24],
      ['g5.48xlarge', 16.288],
      ['p4d.24xlarge', 32.7726],
    ]);
    const input = pricingMock.commandCalls(GetProductsCommand)[0]?.args[0].input;
    expect(input?.ServiceCode).to.equal('AmazonEC2');
    expect(input?.Filters).to.deep.include({ Type: 'TERM_MATCH', Field: 'regionCode', Value: 'us-east-1' });
    expect(pricingMock.commandCalls(GetProductsCommand)).to.have.length(2);
  });

  it('says what comes closest when nothing satisfies the request', async () => {
    const err = await fleet().plan({ gpu: { count: 16, name: 'A10G' }, interruptible: true, local: false }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(ResourceError);
    expect((err as Error).message).to.equal(
      'no EC2 instance type in us-east-1 offers 16 × A10G GPU, spot: the largest with A10G is g5.48xlarge (8 × 24 GiB, 192 CPUs, 768 GiB); lower `resources` in the workflow',
    );
    const h100 = await fleet().plan({ gpu: { count: 1, name: 'H100' }, interruptible: false, local: false }).catch((e: unknown) => e);
    expect((h100 as Error).message).to.match(/there is no `H100` GPU; the GPUs are A100, A10G, T4, V100$/);
  });

  it('launches the shortfall as one instant spot fleet: price-capacity-optimized over the offers, from a launch template', async () => {
    ec2Mock.on(DescribeInstancesCommand).resolves({
      Reservations: [{ Instances: [{ InstanceId: 'i-0aaa', State: { Name: 'running' }, InstanceType: 'g5.xlarge', Tags: [{ Key: 'dstack:profile', Value: profileIdOf(A10G_SPOT) }] }] }],
    });
    ec2Mock.on(DescribeImagesCommand).resolves({
      Images: [
        { ImageId: 'ami-0old', CreationDate: '2026-10-01T00:00:00.000Z' },
        { ImageId: 'ami-0new', CreationDate: '2026-11-20T00:00:00.000Z' },
      ],
    });
    ec2Mock.on(CreateLaunchTemplateCommand).resolves({});
    ec2Mock.on(CreateFleetCommand).resolves({ Instances: [{ InstanceIds: ['i-0bbb', 'i-0ccc'] }] });
    const f = fleet();
    const placement = await f.plan(A10G_SPOT);
    await f.ensureCapacity([{ placement, backlog: 5 }]);

    expect(ec2Mock.commandCalls(DescribeInstancesCommand)[0]?.args[0].input.Filters).to.deep.equal([
      { Name: 'tag:dstack:fleet', Values: ['dstack'] },
      { Name: 'instance-state-name', Values: ['pending', 'running'] },
    ]);
    expect(ec2Mock.commandCalls(DescribeImagesCommand)[0]?.args[0].input).to.deep.equal({
      Owners: ['self'],
      Filters: [
        { Name: 'tag:dstack:role', Values: ['agent'] },
        { Name: 'state', Values: ['available'] },
      ],
    });
    const lt = ec2Mock.commandCalls(CreateLaunchTemplateCommand)[0]?.args[0].input;
    expect(lt?.LaunchTemplateName).to.match(new RegExp(`^dstack-dstack-${placement.profileId}-[0-9a-f]{8}$`));
    expect(lt?.LaunchTemplateData).to.deep.include({ ImageId: 'ami-0new', InstanceInitiatedShutdownBehavior: 'terminate', IamInstanceProfile: { Name: 'dstack-agent' } });
    // IMDSv2 only, one hop: a process behind a NAT or bridge (a container, a network namespace) gets no token.
    expect(lt?.LaunchTemplateData?.MetadataOptions).to.deep.include({ HttpTokens: 'required', HttpEndpoint: 'enabled', HttpPutResponseHopLimit: 1 });
    // The coordinator policy allows CreateLaunchTemplate, CreateFleet and RunInstances only with a `dstack:profile` request tag.
    expect(lt?.TagSpecifications).to.deep.equal([{ ResourceType: 'launch-template', Tags: tagsOf(placement.profileId) }]);
    expect(lt?.LaunchTemplateData?.TagSpecifications).to.deep.equal([
      { ResourceType: 'instance', Tags: tagsOf(placement.profileId) },
      { ResourceType: 'volume', Tags: tagsOf(placement.profileId) },
    ]);
    const userData = Buffer.from(lt?.LaunchTemplateData?.UserData ?? '', 'base64').toString('utf8');
    expect(parse(userData)).to.deep.include({ backend: 'aws' });
    expect((parse(userData) as { aws: Record<string, unknown> }).aws).to.deep.include({ bucket: 'ml-team-dstack', queuePrefix: `dstack-${placement.profileId}`, agents: 'none' });
    // The secrets' names stay under the fleet's prefix, which is all of them the agent is told.
    expect((parse(userData) as { aws: Record<string, unknown> }).aws).to.deep.include({ secretsPrefix: 'dstack' });
    expect(userData.replace(/^ {2}secretsPrefix: dstack$/m, '')).to.not.match(/secret|AKIA|password/i);

    const input = ec2Mock.commandCalls(CreateFleetCommand)[0]?.args[0].input;
    expect(input).to.deep.include({
      Type: 'instant',
      TargetCapacitySpecification: { TotalTargetCapacity: 2, DefaultTargetCapacityType: 'spot', SpotTargetCapacity: 2 },
      SpotOptions: { AllocationStrategy: 'price-capacity-optimized', InstanceInterruptionBehavior: 'terminate' },
    });
    expect(input?.ClientToken).to.equal(`dstack-${placement.profileId}-1-2-${Math.floor(Date.UTC(2026, 10, 23, 12) / 60_000)}`);
    expect(input?.LaunchTemplateConfigs?.[0]?.LaunchTemplateSpecification).to.deep.equal({ LaunchTemplateName: lt?.LaunchTemplateName, Version: '$Latest' });
    expect(input?.LaunchTemplateConfigs?.[0]?.Overrides).to.deep.equal(placement.offers.map((o) => ({ InstanceType: o.instanceType, SubnetId: 'subnet-0abc' })));
    expect(input?.TagSpecifications).to.deep.equal([{ ResourceType: 'fleet', Tags: tagsOf(placement.profileId) }]);
  });

  it("opens the agents' SSH port only to aws.allowedCidrs, in the fleet's own security group", async () => {
    ec2Mock.on(DescribeInstancesCommand).resolves({ Reservations: [] });
    ec2Mock.on(DescribeSubnetsCommand).resolves({ Subnets: [{ SubnetId: 'subnet-0abc', VpcId: 'vpc-0abc' }] });
    ec2Mock.on(DescribeSecurityGroupsCommand).resolves({ SecurityGroups: [] });
    ec2Mock.on(CreateSecurityGroupCommand).resolves({ GroupId: 'sg-0ssh' });
    ec2Mock.on(AuthorizeSecurityGroupIngressCommand).resolves({ Return: true });
    ec2Mock.on(RevokeSecurityGroupIngressCommand).resolves({ Return: true });
    ec2Mock.on(CreateLaunchTemplateCommand).resolves({});
    ec2Mock.on(CreateFleetCommand).resolves({ Instances: [{ InstanceIds: ['i-0bbb'] }] });
    const f = fleet({ ssh: { port: 10022, allowedCidrs: ['203.0.113.7/32'] } });
    const placement = await f.plan(A10G_SPOT);
    await f.ensureCapacity([{ placement, backlog: 1 }]);
    expect(ec2Mock.commandCalls(DescribeSecurityGroupsCommand)[0]?.args[0].input.Filters).to.deep.equal([
      { Name: 'vpc-id', Values: ['vpc-0abc'] },
      { Name: 'group-name', Values: ['dstack-dstack-agents'] },
    ]);
    expect(ec2Mock.commandCalls(CreateSecurityGroupCommand)[0]?.args[0].input).to.deep.equal({
      GroupName: 'dstack-dstack-agents',
      Description: 'dstack agents of fleet dstack: SSH (port 10022) from aws.allowedCidrs only',
      VpcId: 'vpc-0abc',
      TagSpecifications: [{ ResourceType: 'security-group', Tags: [{ Key: 'dstack:fleet', Value: 'dstack' }, { Key: 'dstack:role', Value: 'agent' }] }],
    });
    expect(ec2Mock.commandCalls(AuthorizeSecurityGroupIngressCommand).map((c) => c.args[0].input)).to.deep.equal([
      { GroupId: 'sg-0ssh', IpPermissions: [{ IpProtocol: 'tcp', FromPort: 10022, ToPort: 10022, IpRanges: [{ CidrIp: '203.0.113.7/32', Description: 'dstack ssh' }] }] },
    ]);
    expect(ec2Mock.commandCalls(RevokeSecurityGroupIngressCommand)).to.have.length(0);
    expect(ec2Mock.commandCalls(CreateLaunchTemplateCommand)[0]?.args[0].input.LaunchTemplateData?.SecurityGroupIds).to.deep.equal(['sg-0ssh']);

    // The caller's address changed (a new `dstack config`): the old one is revoked, the new one opened, nothing else kept.
    ec2Mock.resetHistory();
    ec2Mock.on(DescribeSecurityGroupsCommand).resolves({
      SecurityGroups: [
        {
          GroupId: 'sg-0ssh',
          IpPermissions: [
            { IpProtocol: 'tcp', FromPort: 10022, ToPort: 10022, IpRanges: [{ CidrIp: '203.0.113.7/32' }, { CidrIp: '198.51.100.9/32' }] },
            { IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '0.0.0.0/0' }] },
          ],
        },
      ],
    });
    const g = fleet({ ssh: { port: 10022, allowedCidrs: ['198.51.100.9/32', '2001:db8::1/128'] } });
    await g.ensureCapacity([{ placement: await g.plan(A10G_SPOT), backlog: 1 }]);
    expect(ec2Mock.commandCalls(CreateSecurityGroupCommand)).to.have.length(0);
    expect(ec2Mock.commandCalls(RevokeSecurityGroupIngressCommand).map((c) => c.args[0].input)).to.deep.equal([
      {
        GroupId: 'sg-0ssh',
        IpPermissions: [
          { IpProtocol: 'tcp', FromPort: 10022, ToPort: 10022, IpRanges: [{ CidrIp: '203.0.113.7/32' }] },
          { IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '0.0.0.0/0' }] },
        ],
      },
    ]);
    expect(ec2Mock.commandCalls(AuthorizeSecurityGroupIngressCommand).map((c) => c.args[0].input)).to.deep.equal([
      { GroupId: 'sg-0ssh', IpPermissions: [{ IpProtocol: 'tcp', FromPort: 10022, ToPort: 10022, Ipv6Ranges: [{ CidrIpv6: '2001:db8::1/128', Description: 'dstack ssh' }] }] },
    ]);
  });

  it('launches on-demand for jobs that are not interruptible, and nothing at the maximum', async () => {
    ec2Mock.on(DescribeInstancesCommand).resolves({ Reservations: [] });
    ec2Mock.on(CreateLaunchTemplateCommand).rejects(Object.assign(new Error('exists'), { name: 'InvalidLaunchTemplateName.AlreadyExistsException' }));
    ec2Mock.on(CreateFleetCommand).resolves({ Instances: [{ InstanceIds: ['i-0ddd'] }] });
    const f = fleet({ ami: 'ami-0pinned', maxInstances: 1 });
    const placement = await f.plan({ cpu: 8, interruptible: false, local: false });
    await f.ensureCapacity([{ placement, backlog: 4 }]);
    const input = ec2Mock.commandCalls(CreateFleetCommand)[0]?.args[0].input;
    expect(input?.TargetCapacitySpecification).to.deep.equal({ TotalTargetCapacity: 1, DefaultTargetCapacityType: 'on-demand', OnDemandTargetCapacity: 1 });
    expect(input?.OnDemandOptions).to.deep.equal({ AllocationStrategy: 'lowest-price' });
    expect(ec2Mock.commandCalls(DescribeImagesCommand)).to.have.length(0);
    expect(ec2Mock.commandCalls(CreateLaunchTemplateCommand)[0]?.args[0].input.LaunchTemplateData?.ImageId).to.equal('ami-0pinned');

    ec2Mock.on(DescribeInstancesCommand).resolves({ Reservations: [{ Instances: [{ InstanceId: 'i-0ddd', State: { Name: 'pending' } }] }] });
    await f.ensureCapacity([{ placement, backlog: 4 }]);
    expect(ec2Mock.commandCalls(CreateFleetCommand)).to.have.length(1);
  });

  it('reports a launch that EC2 refused, and a missing agent image, in one line', async () => {
    ec2Mock.on(DescribeInstancesCommand).resolves({ Reservations: [] });
    ec2Mock.on(CreateLaunchTemplateCommand).resolves({});
    ec2Mock.on(CreateFleetCommand).resolves({ Errors: [{ ErrorCode: 'InsufficientInstanceCapacity', LaunchTemplateAndOverrides: { Overrides: { InstanceType: 'g5.xlarge' } } }] });
    const f = fleet({ ami: 'ami-0pinned' });
    const placement = await f.plan(A10G_SPOT);
    const err = await f.ensureCapacity([{ placement, backlog: 1 }]).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(TransportError);
    expect((err as Error).message).to.equal(`EC2 started no instance for profile ${placement.profileId}: InsufficientInstanceCapacity (g5.xlarge); retried on the next reconcile`);

    ec2Mock.on(DescribeImagesCommand).resolves({ Images: [] });
    const noImage = await fleet().ensureCapacity([{ placement, backlog: 1 }]).catch((e: unknown) => e);
    expect(noImage).to.be.instanceOf(ConfigError);
    expect((noImage as Error).message).to.match(/^no dstack agent image .*scripts\/build-ami\.sh/);
    // And `dstack run` refuses it at plan, before anything is uploaded or queued.
    expect(await fleet().plan(A10G_SPOT).catch((e: unknown) => e)).to.be.instanceOf(ConfigError);
  });

  it('run --dry-run of a `gpu: {name: A10G}` workflow shows the matching instance types and their price', async () => {
    const repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: train\n    provider: bash\n    commands: [python train.py]\n    resources:\n      gpu:\n        name: A10G\n' });
    const home = tempDir('dryhome');
    try {
      const ctx = await coordinatorContext({ configYaml: '', home, cwd: repo, compute: fleet() });
      const code = await runCommand(ctx, { workflow: 'train', args: [], detach: true, dryRun: true, tag: undefined, useCache: false, overrides: { env: [], artifacts: [], deps: [] }, overrideArgv: [] });
      expect(code).to.equal(0);
      const lines = ctx.out.text().split('\n');
      const at = lines.findIndex((l) => l.startsWith('Candidate instance types (on-demand, cheapest first'));
      expect(at, ctx.out.text()).to.be.above(0);
      expect(lines.slice(at + 1, at + 5).map((l) => l.split(/\s{2,}/))).to.deep.equal([
        ['TYPE', 'CPUS', 'MEMORY', 'GPU', 'PRICE/H'],
        ['g5.xlarge', '4', '16.0 GB', '1×A10G 24.0 GB', '$1.0060'],
        ['g5.2xlarge', '8', '32.0 GB', '1×A10G 24.0 GB', '$1.2120'],
        ['g5.4xlarge', '16', '64.0 GB', '1×A10G 24.0 GB', '$1.6240'],
      ]);
      const spec = JSON.parse(lines[0] ?? '{}') as { placement: { offers: unknown[] } };
      expect(spec.placement.offers).to.have.length(6);
      // A dry run launches nothing.
      expect(ec2Mock.commandCalls(CreateFleetCommand)).to.have.length(0);
    } finally {
      removeAll(repo, home);
    }
  });

  it('an impossible request fails at submit, before anything is stored or enqueued', async () => {
    const repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: huge\n    provider: bash\n    commands: [echo]\n    resources:\n      gpu: {count: 16, name: A10G}\n' });
    const home = tempDir('dryhome');
    try {
      const ctx = await coordinatorContext({ configYaml: '', home, cwd: repo, compute: fleet() });
      const err = await runCommand(ctx, { workflow: 'huge', args: [], detach: true, dryRun: false, tag: undefined, useCache: false, overrides: { env: [], artifacts: [], deps: [] }, overrideArgv: [] }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(ResourceError);
      expect((err as Error).message).to.match(/^no EC2 instance type in us-east-1 offers 16 × A10G GPU, on-demand: /);
      expect(await ctx.store.list('')).to.deep.equal([]);
      expect((await (await ctx.queueFor('default')).counts()).visible).to.equal(0);
    } finally {
      removeAll(repo, home);
    }
  });
});
