import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { LocalCompute, LocalAgentRegistry } from '../../common/local/local-compute.js';
import { LocalQueue } from '../../common/local/local-queue.js';
import { LocalStore } from '../../common/local/local-store.js';
import { ROOT, removeAll, tempDir, waitFor } from '../support/cli.js';
import { computeContract } from './compute-contract.js';
import { queueContract } from './queue-contract.js';
import { storeContract } from './store-contract.js';

queueContract('LocalQueue', async () => {
  const dir = tempDir('queue');
  const open = (): LocalQueue => new LocalQueue({ root: dir, name: 'jobs', maxReceives: 2, pollMs: 200 });
  return { queue: open(), reopen: open, cleanup: async () => removeAll(dir) };
});

storeContract('LocalStore', async () => {
  const dir = tempDir('store');
  return { store: new LocalStore(dir), cleanup: async () => removeAll(dir) };
});

computeContract('LocalCompute', async () => {
  const dir = tempDir('compute');
  const registry = new LocalAgentRegistry(join(dir, 'agents'));
  // A stand-in agent: a process that lives until it is killed.
  const compute = new LocalCompute({
    registry,
    maxAgents: 2,
    agentCommand: [process.execPath, '-e', 'setTimeout(() => {}, 60000)'],
    env: {},
    logDir: join(dir, 'logs'),
  });
  return {
    compute,
    maxAgents: 2,
    loseAgent: async () => {
      const [first] = await registry.live();
      if (!first) return;
      process.kill(first.pid, 'SIGKILL');
      await waitFor(async () => ((await registry.live()).some((a) => a.pid === first.pid) ? undefined : true), 5000, 'the killed agent to be gone');
    },
    cleanup: async () => {
      for (const a of await registry.live()) process.kill(a.pid, 'SIGKILL');
      removeAll(dir);
    },
  };
});

describe('LocalQueue across processes', function () {
  this.timeout(30_000);
  it('gives each of 40 messages to exactly one of 4 receiving processes', async () => {
    const dir = tempDir('queue-mp');
    try {
      const q = new LocalQueue({ root: dir, name: 'jobs', maxReceives: 3 });
      for (let i = 0; i < 40; i++) await q.send(`m${i}`);
      const script = join(ROOT, 'test', 'support', 'queue-worker.ts');
      const outputs = await Promise.all(
        Array.from(
          { length: 4 },
          () =>
            new Promise<string>((resolve, reject) => {
              const child = spawn(process.execPath, ['--import', 'tsx', script, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
              let out = '';
              child.stdout.on('data', (d: Buffer) => (out += d.toString()));
              child.on('error', reject);
              child.on('close', () => resolve(out));
            }),
        ),
      );
      const got = outputs.flatMap((o) => o.split('\n').filter((l) => l.length > 0));
      expect(got.sort()).to.deep.equal(Array.from({ length: 40 }, (_, i) => `m${i}`).sort());
      expect(outputs.filter((o) => o.length > 0).length).to.be.greaterThan(1);
    } finally {
      removeAll(dir);
    }
  });
});
