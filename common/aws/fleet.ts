import { EC2Client } from '@aws-sdk/client-ec2';
import { PricingClient } from '@aws-sdk/client-pricing';
import type { DstackConfig } from '../config.js';
import { ConfigError } from '../errors.js';
import { agentUserData } from '../fleet/user-data.js';
import type { Compute } from '../ports.js';
import { Ec2Catalog } from './ec2-catalog.js';
import { Ec2Fleet } from './ec2-fleet.js';

/** The EC2 fleet for backend aws with `agents: ec2`: its catalog of types and prices, and its launches. */
export function openEc2Fleet(config: DstackConfig, profile: string | undefined): Compute {
  const aws = config.aws;
  if (!aws?.bucket) throw new ConfigError('backend `aws` needs a bucket: run `dstack config --backend aws --bucket NAME`');
  const common = { region: aws.region, ...(profile ? { profile } : {}) };
  const ec2 = new EC2Client(common);
  // The Pricing API answers in us-east-1 (and a few others) for every region.
  const pricing = new PricingClient({ ...common, region: 'us-east-1' });
  return new Ec2Fleet({
    ec2,
    catalog: new Ec2Catalog(ec2, pricing, aws.region),
    fleet: aws.queuePrefix,
    maxInstances: aws.maxInstances,
    ...(aws.ami ? { ami: aws.ami } : {}),
    ...(aws.subnet ? { subnet: aws.subnet } : {}),
    ...(aws.securityGroups ? { securityGroups: aws.securityGroups } : {}),
    ...(aws.instanceProfile ? { instanceProfile: aws.instanceProfile } : {}),
    userData: (profileId) => agentUserData(config, profileId),
    ...(aws.sshPort > 0 && aws.allowedCidrs?.length ? { ssh: { port: aws.sshPort, allowedCidrs: aws.allowedCidrs } } : {}),
  });
}
