import {
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
}

interface FleetInstance {
  id: string;
  profileId: string;
  state: string;
  type: string;
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
    return (await this.instances()).map((i) => ({ id: i.id, location: `${i.type} in ${i.zone}`, state: i.state === 'pending' ? 'starting' : 'running', profileId: i.profileId }));
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
          out.push({ id: i.InstanceId, profileId, state: i.State?.Name ?? 'pending', type: i.InstanceType ?? '?', zone: i.Placement?.AvailabilityZone ?? '?' });
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
      ...(this.o.securityGroups?.length ? { SecurityGroupIds: this.o.securityGroups } : {}),
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
