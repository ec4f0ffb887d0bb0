import { stringify } from 'yaml';
import { DEFAULT_SSH_PORT, type DstackConfig } from '../config.js';
import { profileQueuePrefix } from './match.js';

/**
 * The config an EC2 agent of one profile boots with, passed as user-data (the AMI's unit starts the
 * agent with DSTACK_AGENT_CONFIG=user-data). It carries no credentials: the instance profile does.
 * The agent serves only its profile's queue, and leaves scaling to the coordinator (`agents: none`).
 */
export function agentUserData(config: DstackConfig, profileId: string): string {
  const aws = config.aws;
  if (!aws?.bucket) throw new Error('agentUserData: backend aws needs a bucket');
  return stringify({
    backend: 'aws',
    aws: {
      region: aws.region,
      bucket: aws.bucket,
      queuePrefix: profileQueuePrefix(aws.queuePrefix, profileId),
      // The secrets stay under the fleet's prefix, not the profile's queue prefix.
      secretsPrefix: aws.secretsPrefix ?? aws.queuePrefix,
      ...(aws.endpoints ? { endpoints: aws.endpoints } : {}),
      visibilityCapSec: aws.visibilityCapSec,
      agents: 'none',
      // Only when set, so that the launch templates of everyone else stay as they were.
      ...(aws.jobInstanceRole ? { jobInstanceRole: true } : {}),
      ...(aws.sshPort !== DEFAULT_SSH_PORT ? { sshPort: aws.sshPort } : {}),
    },
    local: config.local,
  });
}
