import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { JobFailedError } from '../../common/errors.js';
import { listGpus, type Gpu } from '../../common/gpus.js';
import { MachineGpuPool, type GpuGrant } from '../../agent/gpus.js';
import { fakeNvidiaSmi } from '../support/fake-nvidia-smi.js';
import { removeAll, tempDir } from '../support/cli.js';

const A10G: Gpu[] = [
  { index: 0, name: 'NVIDIA A10G', memoryMiB: 23028 },
  { index: 1, name: 'NVIDIA A10G', memoryMiB: 23028 },
];

describe('GPUs', () => {
  let dir: string;
  let claims: string;
  beforeEach(() => {
    dir = tempDir('gpus');
    claims = join(dir, 'claims');
  });
  afterEach(() => removeAll(dir));

  /** One agent of this machine: each pool shares the claims folder, as the agents of one machine do. */
  const agent = (gpus: Gpu[] = A10G): MachineGpuPool => new MachineGpuPool({ gpus, dir: claims, pid: process.pid, host: hostname(), pollMs: 20 });
  const never = new AbortController().signal;
  const quiet = (): void => undefined;

  describe('listGpus', () => {
    it('reads the cards nvidia-smi lists (2 × A10G from the stand-in)', async () => {
      const bin = fakeNvidiaSmi(join(dir, 'bin'), { gpus: 2 });
      expect(await listGpus(bin)).to.deep.equal(A10G);
    });

    it('finds none when nvidia-smi is not on PATH, or fails (no driver loaded)', async () => {
      expect(await listGpus(join(dir, 'empty'))).to.deep.equal([]);
      const bin = join(dir, 'broken');
      mkdirSync(bin);
      writeFileSync(join(bin, 'nvidia-smi'), '#!/bin/sh\necho "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver." >&2\nexit 9\n');
      chmodSync(join(bin, 'nvidia-smi'), 0o755);
      expect(await listGpus(bin)).to.deep.equal([]);
    });
  });

  describe('MachineGpuPool', () => {
    it('gives two `gpu: 1` jobs GPU 0 and 1; a third waits, saying so, until one is released, then gets the freed one', async () => {
      const first = await agent().acquire({ count: 1 }, 'run-a/1', never, quiet);
      const second = await agent().acquire({ count: 1 }, 'run-b/1', never, quiet);
      expect([first.indices, second.indices]).to.deep.equal([[0], [1]]);

      const said: string[] = [];
      let saidWaiting!: () => void;
      const waiting = new Promise<void>((resolve) => (saidWaiting = resolve));
      let third: GpuGrant | undefined;
      const thirdGot = agent()
        .acquire({ count: 1 }, 'run-c/1', never, (line) => {
          said.push(line);
          saidWaiting();
        })
        .then((g) => (third = g));
      await waiting;
      expect(said).to.deep.equal(['waiting for 1 GPU: GPU 0 and 1 are held by other jobs on this machine (run-a/1, run-b/1)']);
      expect(third).to.equal(undefined);

      await second.release();
      await thirdGot;
      expect(third?.indices).to.deep.equal([1]);
      expect(said[1]).to.match(/^got GPU 1 after waiting \d+s$/);
      await Promise.all([first.release(), third?.release()]);
      expect(readdirSync(claims).filter((n) => n.endsWith('.json'))).to.deep.equal([]);
    });

    it('takes all the GPUs a job asks for, or none: a `gpu: 2` job waits while one of two is held', async () => {
      const one = await agent().acquire({ count: 1 }, 'run-a/1', never, quiet);
      const lines: string[] = [];
      let saidWaiting!: () => void;
      const waiting = new Promise<void>((resolve) => (saidWaiting = resolve));
      const both = agent().acquire({ count: 2 }, 'run-b/1', never, (l) => {
        lines.push(l);
        saidWaiting();
      });
      await waiting;
      expect(lines).to.deep.equal(['waiting for 2 GPUs: GPU 0 is held by another job on this machine (run-a/1)']);
      // GPU 1 is free, and left so: another `gpu: 1` job gets it at once.
      const other = await agent().acquire({ count: 1 }, 'run-c/1', never, quiet);
      expect(other.indices).to.deep.equal([1]);
      await Promise.all([one.release(), other.release()]);
      expect((await both).indices).to.deep.equal([0, 1]);
    });

    it('serves a name (case-insensitive, part of it) and a memory only with the GPUs that have them', async () => {
      const mixed: Gpu[] = [
        { index: 0, name: 'Tesla T4', memoryMiB: 15360 },
        { index: 1, name: 'NVIDIA A10G', memoryMiB: 23028 },
      ];
      const byName = await agent(mixed).acquire({ count: 1, name: 'a10g' }, 'run-a/1', never, quiet);
      expect(byName.indices).to.deep.equal([1]);
      await byName.release();
      const byMemory = await agent(mixed).acquire({ count: 1, memoryMiB: 16 * 1024 }, 'run-b/1', never, quiet);
      expect(byMemory.indices).to.deep.equal([1]);
      const t4 = await agent(mixed).acquire({ count: 1, name: 'T4' }, 'run-c/1', never, quiet);
      expect(t4.indices).to.deep.equal([0]);
      await Promise.all([byMemory.release(), t4.release()]);
    });

    it('fails a request this machine can never serve with one line naming what it has and `--gpu 0`', async () => {
      const refusal = async (pool: MachineGpuPool, want: Parameters<MachineGpuPool['acquire']>[0]): Promise<string> => {
        const e: unknown = await pool.acquire(want, 'run-a/1', never, quiet).then(
          () => undefined,
          (err: unknown) => err,
        );
        expect(e).to.be.instanceOf(JobFailedError);
        return (e as JobFailedError).message;
      };
      expect(await refusal(agent(), { count: 3 })).to.equal(
        'the job asks for 3 GPUs, and this machine has 2 × NVIDIA A10G, 23028 MiB (0, 1): run it with `--gpu 0`, or on a machine that has them',
      );
      expect(await refusal(agent(), { count: 1, name: 'V100', memoryMiB: 32768 })).to.equal(
        'the job asks for 1 GPU named `V100` and with 32768 MiB or more, and this machine has 2 × NVIDIA A10G, 23028 MiB (0, 1): run it with `--gpu 0`, or on a machine that has it',
      );
      expect(await refusal(agent([]), { count: 1 })).to.equal('the job asks for 1 GPU, and this machine has no GPU: run it with `--gpu 0`, or on a machine that has it');
      expect(existsSync(claims)).to.equal(false);
    });

    it("frees the claim of an agent that is gone (its pid dead on this host), and keeps another host's", async () => {
      const dead = await deadPid();
      mkdirSync(claims, { recursive: true });
      const claim = (pid: number, host: string): string => JSON.stringify({ holder: 'run-old/1', pid, host, since: new Date().toISOString() });
      writeFileSync(join(claims, '0.json'), claim(dead, hostname()));
      writeFileSync(join(claims, '1.json'), claim(dead, 'another-host'));
      const g = await agent().acquire({ count: 1 }, 'run-a/1', never, quiet);
      expect(g.indices).to.deep.equal([0]);
      expect(JSON.parse(readFileSync(join(claims, '0.json'), 'utf8'))).to.include({ holder: 'run-a/1', pid: process.pid, host: hostname() });
      expect(JSON.parse(readFileSync(join(claims, '1.json'), 'utf8'))).to.include({ holder: 'run-old/1', host: 'another-host' });
      await g.release();
    });

    it('frees the claim of a frozen agent (its pid alive, its lease deadline past): its job was killed at that deadline', async () => {
      const deadline = join(dir, 'job.deadline');
      writeFileSync(deadline, String(Date.now() + 60_000));
      const frozen = await agent().acquire({ count: 2 }, 'run-frozen/1', never, quiet, { deadlineFile: deadline });
      expect(frozen.indices).to.deep.equal([0, 1]);
      let waited = '';
      const next = agent().acquire({ count: 1 }, 'run-next/2', never, (line) => (waited = line));
      await new Promise((r) => setTimeout(r, 100));
      expect(waited).to.match(/^waiting for 1 GPU/);
      // The holder's agent stops refreshing its deadline (SIGSTOP): once it is past, the claim is stale.
      writeFileSync(deadline, String(Date.now() - 1));
      expect((await next).indices).to.deep.equal([0]);
    });

    it('rejects with the signal’s reason when aborted while waiting, holding nothing', async () => {
      const both = await agent().acquire({ count: 2 }, 'run-a/1', never, quiet);
      const ac = new AbortController();
      let saidWaiting!: () => void;
      const waiting = new Promise<void>((resolve) => (saidWaiting = resolve));
      const got = agent().acquire({ count: 1 }, 'run-b/1', ac.signal, () => saidWaiting());
      await waiting;
      const reason = new Error('stopped by the user');
      ac.abort(reason);
      const e: unknown = await got.then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e).to.equal(reason);
      await both.release();
      expect(readdirSync(claims).filter((n) => !n.startsWith('.lock'))).to.deep.equal([]);
    });
  });
});

/** The pid of a process that has ended. */
async function deadPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((resolve) => child.on('exit', resolve));
  if (child.pid === undefined) throw new Error('could not start `true`');
  return child.pid;
}
