import { spawn } from 'node:child_process';
import { mkdir, open, readdir, readFile, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { errnoCode } from '../errors.js';
import type { AgentInfo, Compute, Demand, Placement } from '../ports.js';

/** Outside EC2 there is one profile, served by the default queue. */
export const LOCAL_PLACEMENT: Placement = { profileId: 'default', offers: [] };
import { writeFileAtomic } from './local-store.js';

interface AgentEntry {
  id: string;
  pid: number;
  state: AgentInfo['state'];
  startedAt: string;
}

/** The on-disk list of local agents: each agent keeps its own entry up to date and removes it on exit. */
export class LocalAgentRegistry {
  constructor(readonly dir: string) {}

  async write(entry: AgentEntry): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await writeFileAtomic(join(this.dir, '.tmp'), join(this.dir, `${entry.id}.json`), JSON.stringify(entry));
  }

  async remove(id: string): Promise<void> {
    await rm(join(this.dir, `${id}.json`), { force: true });
  }

  /** Entries whose process is alive; entries of dead processes are removed. */
  async live(): Promise<AgentEntry[]> {
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter((n) => n.endsWith('.json'));
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return [];
      throw e;
    }
    const out: AgentEntry[] = [];
    for (const name of names) {
      let entry: AgentEntry;
      try {
        entry = JSON.parse(await readFile(join(this.dir, name), 'utf8')) as AgentEntry;
      } catch {
        continue;
      }
      if (isAlive(entry.pid)) out.push(entry);
      else await this.remove(entry.id);
    }
    return out;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errnoCode(e) === 'EPERM';
  }
}

export interface LocalComputeOptions {
  registry: LocalAgentRegistry;
  maxAgents: number;
  /** argv that starts one agent, e.g. [node, dist/agent/main.js]. */
  agentCommand: string[];
  /** Environment for started agents. */
  env: NodeJS.ProcessEnv;
  logDir: string;
}

/** Local Compute: agents are detached background processes that outlive the CLI. */
export class LocalCompute implements Compute {
  constructor(private readonly opts: LocalComputeOptions) {}

  /** One profile: local agents take any job, whatever its `resources`. */
  async plan(): Promise<Placement> {
    return LOCAL_PLACEMENT;
  }

  async ensureCapacity(demand: Demand[]): Promise<void> {
    const want = Math.min(
      demand.reduce((n, d) => n + d.backlog, 0),
      this.opts.maxAgents,
    );
    if (want <= 0) return;
    await mkdir(this.opts.registry.dir, { recursive: true });
    // Several CLIs may submit at once: count and start under one lock so they do not overshoot.
    const release = await lockfile.lock(this.opts.registry.dir, {
      realpath: false,
      lockfilePath: join(this.opts.registry.dir, '.lock'),
      stale: 5000,
      retries: { retries: 100, minTimeout: 5, maxTimeout: 100 },
      onCompromised: () => undefined,
    });
    try {
      const live = await this.opts.registry.live();
      for (let i = live.length; i < want; i++) await this.start();
    } finally {
      await release().catch(() => undefined);
    }
  }

  private async start(): Promise<void> {
    const id = `local-${randomBytes(4).toString('hex')}`;
    await mkdir(this.opts.logDir, { recursive: true });
    const log = await open(join(this.opts.logDir, `${id}.log`), 'a');
    const [cmd, ...args] = this.opts.agentCommand;
    const child = spawn(cmd ?? process.execPath, args, {
      detached: true,
      stdio: ['ignore', log.fd, log.fd],
      env: { ...this.opts.env, DSTACK_AGENT_ID: id },
    });
    await log.close();
    if (child.pid === undefined) throw new Error(`could not start a local agent (${cmd ?? ''})`);
    await this.opts.registry.write({ id, pid: child.pid, state: 'starting', startedAt: new Date().toISOString() });
    child.unref();
  }

  async listAgents(): Promise<AgentInfo[]> {
    return (await this.opts.registry.live()).map((e) => ({ id: e.id, location: `pid ${e.pid}`, state: e.state }));
  }
}

/** `aws.agents: none`: agents are started by something else (instances launched by hand from the AMI); nothing to scale. */
export class ExternalAgents implements Compute {
  async plan(): Promise<Placement> {
    return LOCAL_PLACEMENT;
  }

  async ensureCapacity(): Promise<void> {}

  async listAgents(): Promise<AgentInfo[]> {
    return [];
  }
}
