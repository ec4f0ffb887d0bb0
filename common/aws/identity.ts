import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { ConfigError } from '../errors.js';
import { credentialsError, wrapAws } from './errors.js';
import { normalizeOwner } from '../owner.js';

export interface IdentitySettings {
  region: string;
  profile?: string;
  /** STS endpoint override (emulators and the tests' fake). */
  endpoint?: string;
}

/**
 * The ARN of whoever the credentials belong to (STS GetCallerIdentity), without a session name the
 * SDK generated (see normalizeOwner): the owner of the runs this process submits.
 */
export async function callerArn(s: IdentitySettings): Promise<string> {
  const sts = new STSClient({ region: s.region, ...(s.profile ? { profile: s.profile } : {}), ...(s.endpoint ? { endpoint: s.endpoint } : {}) });
  try {
    const r = await sts.send(new GetCallerIdentityCommand({}));
    if (!r.Arn) throw new ConfigError('STS GetCallerIdentity answered without an ARN: cannot tell who owns the runs');
    return normalizeOwner(r.Arn);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw credentialsError(e, { what: 'ask STS who you are', profile: s.profile }) ?? wrapAws(e, 'ask STS who you are (GetCallerIdentity)');
  } finally {
    sts.destroy();
  }
}
