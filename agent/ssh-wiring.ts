import { join } from 'node:path';
import { toError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { ServiceInfo } from '../common/runs.js';
import type { JobSpec } from '../common/spec/job-spec.js';
import type { InstanceMetadata } from './imds.js';
import type { StartedJob } from './attempt.js';
import type { JobUser } from './job-user.js';
import { AgentSshServer, loadHostKey } from './ssh-server.js';

/** What the agent's loop tells the SSH endpoint: a job is set up (its folder, environment and ports), a job ended. */
export interface SshWiring {
  /** Lets the spec's key in for this job; returns what the attempt record publishes, or nothing when the spec has no key. */
  jobStarted(spec: JobSpec, job: StartedJob): NonNullable<ServiceInfo['ssh']> | undefined;
  /** Closes the job's connections; no key is accepted until the next job. */
  jobEnded(): void;
  close(): Promise<void>;
}

/**
 * Starts the SSH endpoint of an EC2 agent: on the instance's own address (`local-ipv4`; the public
 * address is NATed to it), on `port`, published under the public address (`public-ipv4`, else the
 * private one, for a VPN). A failure (the port taken, IMDS silent) is logged and the agent runs on
 * without it: jobs still run, only `dstack ssh` and the forwards are missing.
 */
export async function startSshEndpoint(o: { home: string; imds: InstanceMetadata; port: number; log: Logger; user?: JobUser }): Promise<SshWiring | undefined> {
  try {
    const [local, pub] = await Promise.all([o.imds.get('latest/meta-data/local-ipv4'), o.imds.get('latest/meta-data/public-ipv4')]);
    const bindHost = local?.trim() || '0.0.0.0';
    const host = pub?.trim() || local?.trim();
    if (!host) throw new Error('IMDS names no address for this instance (public-ipv4, local-ipv4)');
    const key = await loadHostKey(join(o.home, 'ssh'));
    const server = new AgentSshServer(key.privateKey);
    const port = await server.listen(bindHost, o.port);
    o.log.log('info', `SSH endpoint on ${bindHost}:${port} (published as ${host}:${port}), for each run's submitter key only`);
    return {
      jobStarted: (spec, job) => {
        if (!spec.sshKey) {
          server.setJob(undefined);
          return undefined;
        }
        const user = job.user ?? o.user;
        server.setJob({ publicKey: spec.sshKey, allowedPorts: job.ports, cwd: job.cwd, env: job.env, ...(user ? { user } : {}) });
        return { host, port, user: user?.name ?? 'dstack', hostKey: key.publicKey };
      },
      jobEnded: () => server.setJob(undefined),
      close: () => server.close(),
    };
  } catch (e) {
    o.log.log('warn', 'no SSH endpoint: `dstack ssh` and port forwards will not reach this agent', { error: toError(e).message });
    return undefined;
  }
}
