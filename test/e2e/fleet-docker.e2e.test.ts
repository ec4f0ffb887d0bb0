import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { agentUserData } from '../../common/fleet/user-data.js';
import { loadRun } from '../../common/runs.js';
import { repoInfo } from '../../coordinator/code-capture.js';
import { makeRepo, removeAll, tempDir } from '../support/cli.js';
import { coordinatorContext, reconcileLoop, submit, waitForRun } from '../support/coordinator.js';
import { requireDocker, type DockerEnv } from '../support/docker.js';
import { dockerWithoutGpus } from '../support/docker-gpu-shim.js';
import { startEmulator, uniqueName, type Emulator } from '../support/fauxqs.js';
import { FleetSimulator } from '../support/fleet-sim.js';

describe('e2e: a docker job on a simulated EC2 GPU instance', function () {
  this.timeout(120_000);
  let d: DockerEnv;
  let emulator: Emulator | undefined;
  let sim: FleetSimulator | undefined;
  let repo = '';
  let home = '';
  let bin = '';

  before(async function () {
    d = await requireDocker(this);
    emulator = await startEmulator();
  });
  after(async () => {
    await sim?.shutdown();
    await emulator?.stop();
    removeAll(repo, home, bin);
  });

  it('gets its own GPU from the stand-in nvidia-smi, as `--gpus device=0` on its container', async () => {
    const em = emulator as Emulator;
    repo = makeRepo({
      '.dstack/workflows.yaml': `workflows:
  - name: gpu-docker
    provider: docker
    image: ${d.image}
    commands:
      - echo "in the container, CUDA_VISIBLE_DEVICES=[$CUDA_VISIBLE_DEVICES]"
    resources:
      gpu: 1
`,
    });
    home = tempDir('fleet-docker-home');
    bin = tempDir('fleet-docker-bin');
    // The instance's PATH: docker with the device request recorded, then dropped. The simulator puts a
    // stand-in nvidia-smi with the instance's one A10G before it.
    const requests = join(bin, 'device-requests.jsonl');
    const realDocker = execFileSync('bash', ['-c', 'command -v docker'], { encoding: 'utf8' }).trim();
    dockerWithoutGpus(bin, realDocker, requests);
    const yaml = `backend: aws
aws:
  region: us-east-1
  bucket: ${uniqueName('fleetdocker')}
  queuePrefix: ${uniqueName('fd')}
  endpoints: { sqs: "${em.endpoint}", s3: "${em.endpoint}", sts: "${em.endpoint}" }
  agents: ec2
  maxInstances: 1
local:
  visibilityTimeoutSec: 5
  agentIdleTimeoutSec: 4
  stopGraceSec: 2
`;
    let ctx: Awaited<ReturnType<typeof coordinatorContext>> | undefined;
    sim = new FleetSimulator({
      userData: (profileId) => agentUserData((ctx as NonNullable<typeof ctx>).config, profileId),
      maxInstances: 1,
      env: { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1', PATH: `${bin}:${process.env.PATH ?? ''}`, ...d.env() },
    });
    ctx = await coordinatorContext({ configYaml: yaml, home, cwd: repo, compute: sim });
    const run = await submit(ctx, 'gpu-docker');
    const loop = reconcileLoop(ctx, 200);
    try {
      const final = await waitForRun(ctx.store, repo, run, (v) => v.final !== null, 90_000, 'the run to end');
      const instance = sim.launched[0];
      expect(final.status, instance?.output ?? '').to.equal('done');
      expect(instance?.output).to.match(/GPUs: 1 × NVIDIA A10G/);
    } finally {
      await loop.stop();
    }
    expect(existsSync(requests)).to.equal(true);
    const recorded = readFileSync(requests, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as unknown);
    expect(recorded).to.deep.equal([[{ Driver: '', Count: 0, DeviceIDs: ['0'], Capabilities: [['gpu']], Options: {} }]]);
    const view = await loadRun(ctx.store, (await repoInfo(repo)).repoId, run);
    expect(view.attempts[0]?.gpus).to.deep.equal([0]);
    expect(view.attempts[0]?.image?.ref).to.equal(d.image);
    expect(view.attempts[0]?.instance?.type).to.match(/gpu/);
    // The container numbers its GPUs from 0: the host's ids are not passed in.
    expect(await d.containers(`dstack.run=${run}`)).to.deep.equal([]);
  });
});
