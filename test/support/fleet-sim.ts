import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { profileIdOf } from '../../common/fleet/match.js';
import type { AgentInfo, Compute, Demand, Offer, Placement } from '../../common/ports.js';
import type { ResourceSpec } from '../../common/spec/job-spec.js';
import { AGENT, removeAll, tempDir } from './cli.js';
import { fakeNvidiaSmi } from './fake-nvidia-smi.js';
import { ImdsServer } from './imds-server.js';

/**
 * An interruptible workflow `train` that checkpoints its step into the artifact `ckpt` every second
 * and starts from the saved step: resumed, it says "starting at step N" with N > 0.
 */
export function checkpointingWorkflow(steps: number, echoSteps: boolean): string {
  const echo = echoSteps ? ' echo "step $i";' : '';
  return `  - name: train
    provider: bash
    commands:
      - mkdir -p ckpt
      - i=$(cat ckpt/step 2>/dev/null || echo 0)
      - echo "starting at step $i"
      - while [ "$i" -lt ${steps} ]; do i=$((i+1)); echo "$i" > ckpt/step;${echo} sleep 1; done
    artifacts: [ckpt]
    resources:
      interruptible: true
`;
}

/** One simulated instance: an agent process with its own IMDS server, home and loopback address. */
export interface SimInstance {
  id: string;
  /** 127.0.0.N (N = 2, 3, …): its IMDS answers `local-ipv4` and `public-ipv4` with it, and its agent's SSH endpoint binds there. */
  address: string;
  profileId: string;
  instanceType: string;
  market: 'spot' | 'on-demand';
  imds: ImdsServer;
  child: ChildProcess;
  home: string;
  output: string;
  exited: Promise<number | null>;
}

export interface FleetSimOptions {
  /** The agent config (YAML) an instance of this profile boots with, as EC2 user-data would carry it. */
  userData: (profileId: string) => string;
  maxInstances: number;
  /** Extra environment for the agents (AWS credentials for the emulator). */
  env: Record<string, string>;
}

/**
 * The Compute port as an EC2 fleet would behave, on this machine: each "instance" is an agent
 * process started exactly as the AMI's unit starts it (config from user-data over IMDSv2), with
 * its own IMDS server, so a test can inject a spot notice or kill an instance silently. An
 * instance ends when its agent exits (the idle shutdown), and is never replaced on its own.
 */
export class FleetSimulator implements Compute {
  readonly instances = new Map<string, SimInstance>();
  /** Every instance ever launched, in order. */
  readonly launched: SimInstance[] = [];
  private nextAddress = 2;

  constructor(private readonly o: FleetSimOptions) {}

  async plan(resources: ResourceSpec): Promise<Placement> {
    const market = resources.interruptible ? 'spot' : 'on-demand';
    const gpu = resources.gpu && resources.gpu.count > 0 ? { name: 'A10G', count: resources.gpu.count, memoryMiB: 23028 } : null;
    const offer: Offer = { instanceType: gpu ? 'sim.gpu' : 'sim.cpu', market, pricePerHour: gpu ? 1.2 : 0.1, vcpus: 4, memoryMiB: 16384, gpu };
    return { profileId: profileIdOf(resources), offers: [offer] };
  }

  async ensureCapacity(demand: Demand[]): Promise<void> {
    let total = this.instances.size;
    for (const d of demand) {
      const have = [...this.instances.values()].filter((i) => i.profileId === d.placement.profileId).length;
      const count = Math.min(d.backlog - have, this.o.maxInstances - total);
      for (let n = 0; n < count; n++) await this.launch(d.placement);
      total += Math.max(0, count);
    }
  }

  async listAgents(): Promise<AgentInfo[]> {
    return [...this.instances.values()].map((i) => ({ id: i.id, location: 'sim', state: 'running', profileId: i.profileId, instance: { type: i.instanceType, market: i.market } }));
  }

  async launch(p: Placement): Promise<SimInstance> {
    const id = `i-${randomBytes(8).toString('hex').slice(0, 17)}`;
    const market = p.offers[0]?.market ?? 'on-demand';
    const address = `127.0.0.${this.nextAddress++}`;
    const instanceType = p.offers[0]?.instanceType ?? 'sim';
    const imds = new ImdsServer(id, this.o.userData(p.profileId), instanceType, market, address);
    const url = await imds.start();
    const home = tempDir('siminstance');
    // A GPU instance's cards: a stand-in nvidia-smi first on its agent's PATH (there is no GPU here).
    const env: Record<string, string | undefined> = { ...process.env, ...this.o.env, DSTACK_HOME: home, DSTACK_AGENT_CONFIG: 'user-data', DSTACK_IMDS_URL: url };
    const gpu = p.offers[0]?.gpu;
    if (gpu) {
      const bin = join(home, 'sim-bin');
      mkdirSync(bin, { recursive: true });
      fakeNvidiaSmi(bin, { gpus: gpu.count });
      env.PATH = `${bin}${delimiter}${env.PATH ?? ''}`;
    }
    const child = spawn(process.execPath, [AGENT], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const inst: SimInstance = { id, address, profileId: p.profileId, instanceType, market, imds, child, home, output: '', exited };
    child.stdout?.on('data', (d: Buffer) => (inst.output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (inst.output += d.toString()));
    this.instances.set(id, inst);
    this.launched.push(inst);
    // The agent exiting is the instance shutting down (InstanceInitiatedShutdownBehavior: terminate).
    void exited.then(async () => {
      this.instances.delete(id);
      await imds.stop();
    });
    return inst;
  }

  /** EC2's two-minute warning: the instance's IMDS starts serving `spot/instance-action`. */
  injectSpotNotice(id: string): void {
    this.get(id).imds.injectSpotNotice();
  }

  /** The instance vanishes without notice (hardware failure, a kill -9 of the agent). */
  silentKill(id: string): void {
    this.get(id).child.kill('SIGKILL');
  }

  private get(id: string): SimInstance {
    const i = this.instances.get(id);
    if (!i) throw new Error(`no running simulated instance ${id}`);
    return i;
  }

  /** Terminates every instance and removes their homes. */
  async shutdown(): Promise<void> {
    for (const i of this.launched) {
      if (i.child.exitCode === null && i.child.signalCode === null) i.child.kill('SIGKILL');
      await i.exited;
      await i.imds.stop();
      removeAll(i.home);
    }
  }
}
