import {
  AuthorizeSecurityGroupIngressCommand,
  CreateSecurityGroupCommand,
  DescribeSecurityGroupsCommand,
  DescribeSubnetsCommand,
  DescribeVpcsCommand,
  RevokeSecurityGroupIngressCommand,
  type IpPermission,
  CreateFleetCommand,
  CreateLaunchTemplateCommand,
  DescribeImagesCommand,
  paginateDescribeInstances,
  type EC2Client,
  type Tag,
  type _InstanceType,
} from '@aws-sdk/client-ec2';
import { ConfigError, TransportError } from '../errors.js';
import { placeRequest, type PriceBook } from '../fleet/match.js';
import { sha256 } from '../hash.js';
import type { AgentInfo, Compute, Demand, Placement } from '../ports.js';
import type { ResourceSpec } from '../spec/job-spec.js';
import { eachPage, type Ec2Catalog } from './ec2-catalog.js';
import { awsCode, wrapAws } from './errors.js';

export interface Ec2FleetOptions {
  ec2: EC2Client;
  catalog: Ec2Catalog;
  /** Names this fleet in tags (the queue prefix), so that two configs never count each other's instances. */
  fleet: string;
  maxInstances: number;
  /** The agent AMI; when absent, the newest image of this account tagged `dstack:role=agent`. */
  ami?: string;
  subnet?: string;
  securityGroups?: string[];
  instanceProfile?: string;
  /** The agent's config for one profile (YAML), passed as user-data: no secrets, credentials come from the instance profile. */
  userData: (profileId: string) => string;
  /** Used to make concurrent launches by several coordinators idempotent; defaults to the clock. */
  nowMs?: () => number;
  /**
   * The agents' SSH endpoint (`aws.sshPort`) and who may reach it (`aws.allowedCidrs`): the fleet's
   * own security group opens that port to those CIDRs and nothing else. Absent: no group of ours.
   */
  ssh?: { port: number; allowedCidrs: string[] };
}

interface FleetInstance {
  id: string;
  profileId: string;
  state: string;
  type: string;
  market: 'spot' | 'on-demand';
  zone: string;
}

/**
 * Compute on EC2: one instant fleet launch per profile and shortfall, spot with
 * price-capacity-optimized over the cheapest matching types for interruptible jobs, on-demand
 * otherwise. Instances are never replaced by EC2 (instant fleets) and end themselves when their
 * agent idles out (shutdown behaviour `terminate`), so nothing bills once the queue is empty,
 * whether or not a coordinator is running.
 */
export class Ec2Fleet implements Compute {
  private image: Promise<string> | undefined;
  private sshGroup: Promise<string> | undefined;

  constructor(private readonly o: Ec2FleetOptions) {}

  async plan(resources: ResourceSpec): Promise<Placement> {
    // A missing agent image is a config problem: refused at submit, like an impossible request.
    await this.imageId();
    const types = await this.o.catalog.machineTypes();
    const prices: PriceBook = resources.interruptible
      ? { spot: await this.o.catalog.spotPrices(), onDemand: new Map() }
      : { spot: new Map(), onDemand: await this.o.catalog.onDemandPrices() };
    return placeRequest(resources, types, prices, this.o.catalog.region);
  }

  async ensureCapacity(demand: Demand[]): Promise<void> {
    const instances = await this.instances();
    let total = instances.length;
    const failures: string[] = [];
    for (const d of [...demand].sort((a, b) => b.backlog - a.backlog)) {
      const have = instances.filter((i) => i.profileId === d.placement.profileId).length;
      const count = Math.min(d.backlog - have, this.o.maxInstances - total);
      if (count <= 0 || d.placement.offers.length === 0) continue;
      try {
        total += await this.launch(d.placement, count, have);
      } catch (e) {
        if (e instanceof ConfigError) throw e;
        failures.push(e instanceof Error ? e.message : String(e));
      }
    }
    if (failures.length > 0) throw new TransportError(failures.join('; '), { retryable: true });
  }

  async listAgents(): Promise<AgentInfo[]> {
    return (await this.instances()).map((i) => ({
      id: i.id,
      location: `${i.type} in ${i.zone}`,
      state: i.state === 'pending' ? 'starting' : 'running',
      profileId: i.profileId,
      instance: { type: i.type, market: i.market },
    }));
  }

  private async instances(): Promise<FleetInstance[]> {
    const out: FleetInstance[] = [];
    const filters = [
      { Name: 'tag:dstack:fleet', Values: [this.o.fleet] },
      { Name: 'instance-state-name', Values: ['pending', 'running'] },
    ];
    await eachPage('describe the fleet instances', paginateDescribeInstances({ client: this.o.ec2 }, { Filters: filters }), (page) => {
      for (const r of page.Reservations ?? []) {
        for (const i of r.Instances ?? []) {
          if (!i.InstanceId) continue;
          const profileId = i.Tags?.find((t) => t.Key === 'dstack:profile')?.Value ?? '';
          out.push({ id: i.InstanceId, profileId, state: i.State?.Name ?? 'pending', type: i.InstanceType ?? '?', market: i.InstanceLifecycle === 'spot' ? 'spot' : 'on-demand', zone: i.Placement?.AvailabilityZone ?? '?' });
        }
      }
    });
    return out;
  }

  private tags(profileId: string): Tag[] {
    return [
      { Key: 'Name', Value: `dstack-agent-${profileId}` },
      { Key: 'dstack:fleet', Value: this.o.fleet },
      { Key: 'dstack:profile', Value: profileId },
      { Key: 'dstack:role', Value: 'agent' },
    ];
  }

  /** Launches `count` instances for a profile; returns how many EC2 started. */
  private async launch(p: Placement, count: number, have: number): Promise<number> {
    const template = await this.launchTemplate(p.profileId);
    const spot = p.offers[0]?.market === 'spot';
    const minute = Math.floor((this.o.nowMs?.() ?? Date.now()) / 60_000);
    const r = await this.o.ec2
      .send(
        new CreateFleetCommand({
          Type: 'instant',
          // Coordinators that see the same shortfall in the same minute make one launch, not two.
          ClientToken: `dstack-${p.profileId}-${have}-${count}-${minute}`,
          LaunchTemplateConfigs: [
            {
              LaunchTemplateSpecification: { LaunchTemplateName: template, Version: '$Latest' },
              Overrides: p.offers.map((offer) => ({ InstanceType: offer.instanceType as _InstanceType, ...(this.o.subnet ? { SubnetId: this.o.subnet } : {}) })),
            },
          ],
          TargetCapacitySpecification: {
            TotalTargetCapacity: count,
            DefaultTargetCapacityType: spot ? 'spot' : 'on-demand',
            ...(spot ? { SpotTargetCapacity: count } : { OnDemandTargetCapacity: count }),
          },
          ...(spot
            ? { SpotOptions: { AllocationStrategy: 'price-capacity-optimized', InstanceInterruptionBehavior: 'terminate' } }
            : { OnDemandOptions: { AllocationStrategy: 'lowest-price' } }),
          TagSpecifications: [{ ResourceType: 'fleet', Tags: this.tags(p.profileId) }],
        }),
      )
      .catch((e: unknown) => {
        throw wrapAws(e, `launch ${count} instance(s) for profile ${p.profileId}`);
      });
    const started = (r.Instances ?? []).reduce((n, i) => n + (i.InstanceIds?.length ?? 0), 0);
    if (started === 0) {
      const errors = [...new Set((r.Errors ?? []).map((e) => `${e.ErrorCode ?? '?'} (${e.LaunchTemplateAndOverrides?.Overrides?.InstanceType ?? '?'})`))];
      throw new TransportError(`EC2 started no instance for profile ${p.profileId}: ${errors.join(', ') || 'no reason given'}; retried on the next reconcile`, { retryable: true });
    }
    return started;
  }

  /** A launch template per profile and content: created once, reused after. */
  private async launchTemplate(profileId: string): Promise<string> {
    const image = await this.imageId();
    // With our SSH group, the agents get it besides the configured groups (or instead of the VPC's default one).
    const groups = [...(this.o.securityGroups ?? []), ...(this.o.ssh ? [await this.sshSecurityGroup(this.o.ssh)] : [])];
    const data = {
      ImageId: image,
      UserData: Buffer.from(this.o.userData(profileId)).toString('base64'),
      // The agent shuts the machine down when it idles out: that ends the instance.
      InstanceInitiatedShutdownBehavior: 'terminate' as const,
      // IMDSv2 only, and a token's reply dies after one hop: a process behind a NAT or a bridge (a
      // container, a network namespace) gets no token. Jobs on the host are kept off IMDS by the
      // AMI's firewall rule for the job user (ami/job-imds-block.sh).
      MetadataOptions: { HttpTokens: 'required' as const, HttpEndpoint: 'enabled' as const, HttpPutResponseHopLimit: 1, InstanceMetadataTags: 'disabled' as const },
      ...(this.o.instanceProfile
        ? { IamInstanceProfile: this.o.instanceProfile.startsWith('arn:') ? { Arn: this.o.instanceProfile } : { Name: this.o.instanceProfile } }
        : {}),
      ...(groups.length > 0 ? { SecurityGroupIds: groups } : {}),
      TagSpecifications: [
        { ResourceType: 'instance' as const, Tags: this.tags(profileId) },
        { ResourceType: 'volume' as const, Tags: this.tags(profileId) },
      ],
    };
    const name = `dstack-${this.o.fleet}-${profileId}-${sha256(JSON.stringify(data)).slice(0, 8)}`;
    try {
      // The template's own tags are the request tags the coordinator policy requires (`dstack:profile`).
      await this.o.ec2.send(
        new CreateLaunchTemplateCommand({ LaunchTemplateName: name, LaunchTemplateData: data, TagSpecifications: [{ ResourceType: 'launch-template', Tags: this.tags(profileId) }] }),
      );
    } catch (e) {
      if (awsCode(e) !== 'InvalidLaunchTemplateName.AlreadyExistsException') throw wrapAws(e, `create launch template ${name}`);
    }
    return name;
  }

  /**
   * The fleet's security group `dstack-<fleet>-agents` in the fleet's VPC (the subnet's, else the
   * default VPC), made once: the agents' SSH port open to `allowedCidrs` only. Any other ingress
   * rule it has (an address allowed before, an older port) is revoked; egress stays open, as in a
   * new group. Checked once per process, when the first launch template is made.
   */
  private sshSecurityGroup(ssh: { port: number; allowedCidrs: string[] }): Promise<string> {
    this.sshGroup ??= (async () => {
      const name = `dstack-${this.o.fleet}-agents`;
      const vpc = await this.vpcId();
      const found = await this.o.ec2
        .send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'vpc-id', Values: [vpc] }, { Name: 'group-name', Values: [name] }] }))
        .catch((e: unknown) => {
          throw wrapAws(e, `find security group ${name}`);
        });
      const existing = found.SecurityGroups?.[0];
      let groupId = existing?.GroupId;
      if (!groupId) {
        const made = await this.o.ec2
          .send(
            new CreateSecurityGroupCommand({
              GroupName: name,
              Description: `dstack agents of fleet ${this.o.fleet}: SSH (port ${ssh.port}) from aws.allowedCidrs only`,
              VpcId: vpc,
              TagSpecifications: [{ ResourceType: 'security-group', Tags: [{ Key: 'dstack:fleet', Value: this.o.fleet }, { Key: 'dstack:role', Value: 'agent' }] }],
            }),
          )
          .catch((e: unknown) => {
            throw wrapAws(e, `create security group ${name}`);
          });
        groupId = made.GroupId ?? '';
      }
      const want = new Set(ssh.allowedCidrs);
      const have = new Set<string>();
      const stale: IpPermission[] = [];
      for (const p of existing?.IpPermissions ?? []) {
        const ours = p.IpProtocol === 'tcp' && p.FromPort === ssh.port && p.ToPort === ssh.port;
        const v4 = (p.IpRanges ?? []).filter((r) => !(ours && r.CidrIp && want.has(r.CidrIp)));
        const v6 = (p.Ipv6Ranges ?? []).filter((r) => !(ours && r.CidrIpv6 && want.has(r.CidrIpv6)));
        for (const r of p.IpRanges ?? []) if (ours && r.CidrIp && want.has(r.CidrIp)) have.add(r.CidrIp);
        for (const r of p.Ipv6Ranges ?? []) if (ours && r.CidrIpv6 && want.has(r.CidrIpv6)) have.add(r.CidrIpv6);
        const others = (p.UserIdGroupPairs?.length ?? 0) + (p.PrefixListIds?.length ?? 0);
        if (v4.length + v6.length + others > 0) {
          stale.push({
            IpProtocol: p.IpProtocol,
            ...(p.FromPort !== undefined ? { FromPort: p.FromPort, ToPort: p.ToPort } : {}),
            ...(v4.length ? { IpRanges: v4 } : {}),
            ...(v6.length ? { Ipv6Ranges: v6 } : {}),
            ...(p.UserIdGroupPairs?.length ? { UserIdGroupPairs: p.UserIdGroupPairs } : {}),
            ...(p.PrefixListIds?.length ? { PrefixListIds: p.PrefixListIds } : {}),
          });
        }
      }
      if (stale.length > 0) {
        await this.o.ec2.send(new RevokeSecurityGroupIngressCommand({ GroupId: groupId, IpPermissions: stale })).catch((e: unknown) => {
          throw wrapAws(e, `revoke old rules of security group ${name}`);
        });
      }
      const missing = ssh.allowedCidrs.filter((c) => !have.has(c));
      if (missing.length > 0) {
        const range = (c: string): { v4: boolean; c: string } => ({ v4: !c.includes(':'), c });
        const v4 = missing.map(range).filter((r) => r.v4).map((r) => ({ CidrIp: r.c, Description: 'dstack ssh' }));
        const v6 = missing.map(range).filter((r) => !r.v4).map((r) => ({ CidrIpv6: r.c, Description: 'dstack ssh' }));
        const permission: IpPermission = { IpProtocol: 'tcp', FromPort: ssh.port, ToPort: ssh.port, ...(v4.length ? { IpRanges: v4 } : {}), ...(v6.length ? { Ipv6Ranges: v6 } : {}) };
        await this.o.ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: groupId, IpPermissions: [permission] })).catch((e: unknown) => {
          if (awsCode(e) !== 'InvalidPermission.Duplicate') throw wrapAws(e, `open port ${ssh.port} of security group ${name}`);
        });
      }
      return groupId;
    })();
    // A failure is not remembered: the next launch tries again.
    this.sshGroup.catch(() => (this.sshGroup = undefined));
    return this.sshGroup;
  }

  /** The VPC the agents launch in: the subnet's, else the account's default VPC in the region. */
  private async vpcId(): Promise<string> {
    if (this.o.subnet) {
      const r = await this.o.ec2.send(new DescribeSubnetsCommand({ SubnetIds: [this.o.subnet] })).catch((e: unknown) => {
        throw wrapAws(e, `find subnet ${this.o.subnet ?? ''}`);
      });
      const vpc = r.Subnets?.[0]?.VpcId;
      if (!vpc) throw new ConfigError(`subnet ${this.o.subnet} (aws.subnet) was not found in this region`);
      return vpc;
    }
    const r = await this.o.ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: 'isDefault', Values: ['true'] }] })).catch((e: unknown) => {
      throw wrapAws(e, 'find the default VPC');
    });
    const vpc = r.Vpcs?.[0]?.VpcId;
    if (!vpc) throw new ConfigError('this region has no default VPC: set `aws.subnet` with `dstack config --subnet subnet-…`');
    return vpc;
  }

  private imageId(): Promise<string> {
    if (this.image) return this.image;
    const image = (async () => {
      if (this.o.ami) return this.o.ami;
      const r = await this.o.ec2
        .send(
          new DescribeImagesCommand({
            Owners: ['self'],
            Filters: [
              { Name: 'tag:dstack:role', Values: ['agent'] },
              { Name: 'state', Values: ['available'] },
            ],
          }),
        )
        .catch((e: unknown) => {
          throw wrapAws(e, 'find the dstack agent image');
        });
      const newest = [...(r.Images ?? [])].sort((a, b) => (b.CreationDate ?? '').localeCompare(a.CreationDate ?? ''))[0];
      if (!newest?.ImageId) {
        throw new ConfigError('no dstack agent image (AMI tagged dstack:role=agent) in this account and region: build one with `scripts/build-ami.sh`, or set `aws.ami` with `dstack config --ami ami-…`');
      }
      return newest.ImageId;
    })();
    // A failed lookup is not remembered: `dstack coordinator` tries again on its next pass.
    this.image = image;
    image.catch(() => (this.image = undefined));
    return image;
  }
}
