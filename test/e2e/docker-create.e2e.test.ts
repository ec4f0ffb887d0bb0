import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { requireDocker, type DockerEnv } from '../support/docker.js';
import { createArgs, type ContainerPlan } from '../../agent/runtime/docker.js';
import { bashSpec } from '../support/job-spec.js';

interface Inspected {
  Config: { Env: string[]; Labels: Record<string, string>; WorkingDir: string; Entrypoint: string[] | null; Cmd: string[] | null; User: string };
  HostConfig: {
    DeviceRequests: Array<{ Driver: string; Count: number; DeviceIDs: string[]; Capabilities: string[][] }> | null;
    ShmSize: number;
    Memory: number;
    NanoCpus: number;
    Binds: string[];
    PortBindings: Record<string, Array<{ HostIp: string; HostPort: string }>>;
    Init: boolean;
  };
}

/**
 * What the agent asks the daemon for, read back from a container created (never started: there is no
 * NVIDIA runtime here) with the arguments the agent uses.
 */
describe('e2e: the docker runtime\'s container, as the daemon sees it', function () {
  this.timeout(60_000);
  let d: DockerEnv;
  before(async function () {
    d = await requireDocker(this);
  });

  function plan(overrides: Partial<ContainerPlan> = {}): ContainerPlan {
    const spec = bashSpec(['python train.py'], {
      provider: 'docker',
      image: d.image,
      workflow: 'train',
      runName: 'brave-fox-1',
      jobId: 'job-1',
      workingDir: 'src',
      resources: { interruptible: false, local: false, gpu: { count: 2 }, shmSizeMiB: 512, memoryMiB: 1024, cpu: 1.5 },
    });
    return {
      spec,
      attempt: 2,
      agentId: 'agent-7',
      host: 'box',
      name: `dstack-create-test-${Date.now()}`,
      image: d.image,
      prepared: { script: '/x/run.sh', cwd: '/tmp', env: { PATH: '/host/bin', HOME: '/root', RUN_NAME: 'brave-fox-1', WANDB_API_KEY: 'sekret-value-123', CUDA_VISIBLE_DEVICES: '1,3', PORT_0: '40123' }, ports: [40123], gpus: [1, 3] },
      codeDir: '/tmp',
      absolutePaths: [{ host: '/tmp', container: '/data' }],
      ...overrides,
    };
  }

  async function createAndInspect(p: ContainerPlan): Promise<Inspected> {
    const { args, env } = createArgs(p);
    execFileSync('docker', args, { env: { ...process.env, ...d.env(), ...env }, stdio: 'pipe' });
    try {
      return (JSON.parse(await d.docker(['inspect', p.name])) as Inspected[])[0] as Inspected;
    } finally {
      await d.docker(['rm', '-f', p.name]);
    }
  }

  it('maps the GPUs the job was given to --gpus device ids, and shm, memory and CPUs to their limits', async () => {
    const c = await createAndInspect(plan());
    expect(c.HostConfig.DeviceRequests).to.deep.equal([{ Driver: '', Count: 0, DeviceIDs: ['1', '3'], Capabilities: [['gpu']], Options: {} }]);
    expect(c.HostConfig.ShmSize).to.equal(512 * 2 ** 20);
    expect(c.HostConfig.Memory).to.equal(1024 * 2 ** 20);
    expect(c.HostConfig.NanoCpus).to.equal(1.5e9);
    expect(c.HostConfig.Init).to.equal(true);
  });

  it('mounts the code at /workflow, works in working_dir, publishes the ports on loopback, and labels the container', async () => {
    const c = await createAndInspect(plan());
    expect(c.HostConfig.Binds).to.have.members(['/tmp:/workflow', '/tmp:/data']);
    expect(c.Config.WorkingDir).to.equal('/workflow/src');
    expect(c.HostConfig.PortBindings).to.deep.equal({ '40123/tcp': [{ HostIp: '127.0.0.1', HostPort: '40123' }] });
    expect(c.Config.Labels).to.include({ 'dstack.job': 'job-1', 'dstack.run': 'brave-fox-1', 'dstack.attempt': '2', 'dstack.agent': 'agent-7', 'dstack.agent-host': 'box' });
    expect(c.Config.Entrypoint).to.deep.equal(['/bin/sh']);
    expect(c.Config.Cmd).to.deep.equal(['-c', 'set -e\npython train.py']);
  });

  it('gives the job its variables by name only: none of the host\'s, no host GPU ids, and no secret on the command line', async () => {
    const p = plan();
    const { args } = createArgs(p);
    expect(args.join(' ')).to.not.include('sekret-value-123');
    const c = await createAndInspect(p);
    expect(c.Config.Env).to.include('WANDB_API_KEY=sekret-value-123');
    expect(c.Config.Env).to.include('RUN_NAME=brave-fox-1');
    expect(c.Config.Env).to.include('PORT_0=40123');
    expect(c.Config.Env.some((e) => e.startsWith('HOME=/root') || e === 'PATH=/host/bin' || e.startsWith('CUDA_VISIBLE_DEVICES='))).to.equal(false);
  });

  it('a non-root agent\'s container runs as its user with HOME=/tmp; what the workflow\'s env sets itself (LANG) stays', async () => {
    const p = plan({ ids: { uid: 1234, gid: 1234 } });
    p.spec.env = { LANG: 'C.UTF-8' };
    const c = await createAndInspect({ ...p, prepared: { ...p.prepared, env: { ...p.prepared.env, LANG: 'C.UTF-8', TZ: 'Europe/Berlin' } } });
    expect(c.Config.User).to.equal('1234:1234');
    expect(c.Config.Env).to.include('HOME=/tmp');
    expect(c.Config.Env).to.include('LANG=C.UTF-8');
    // The host's TZ was not the workflow's: the image's stays.
    expect(c.Config.Env.some((e) => e.startsWith('TZ='))).to.equal(false);
  });

  it('fills in ${{ run.name }} in the commands, as for a job on the host', async () => {
    const p = plan();
    p.spec.commands = ['echo ${{ run.name }}'];
    const c = await createAndInspect(p);
    expect(c.Config.Cmd).to.deep.equal(['-c', 'set -e\necho brave-fox-1']);
  });

  it('a job with no GPU gets no device request; `entrypoint` replaces the image\'s and takes the script last', async () => {
    const p = plan();
    p.spec.entrypoint = ['/bin/bash', '-lc'];
    const c = await createAndInspect({ ...p, prepared: { ...p.prepared, gpus: [] } });
    expect(c.HostConfig.DeviceRequests ?? []).to.deep.equal([]);
    expect(c.Config.Entrypoint).to.deep.equal(['/bin/bash']);
    expect(c.Config.Cmd).to.deep.equal(['-lc', 'set -e\npython train.py']);
  });
});
