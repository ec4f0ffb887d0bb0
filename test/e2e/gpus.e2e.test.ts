import { expect } from 'chai';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fakeNvidiaSmi } from '../support/fake-nvidia-smi.js';
import { dstack, removeAll, tempDir, waitFor, withRepoAndHome, type CliResult } from '../support/cli.js';

// Each GPU job prints the devices it was given, then holds them until the test writes its marker.
// The markers are on the host's disk, not under /tmp, which the sandbox (when bwrap works) replaces.
const WORKFLOWS = `workflows:
  - name: train
    provider: bash
    resources:
      gpu: 1
    commands:
      - echo "devices=[$CUDA_VISIBLE_DEVICES]"
      - while [ ! -e "$MARKERS/$RUN_NAME" ]; do sleep 0.1; done
  - name: prep
    provider: bash
    commands:
      - echo "devices=[$CUDA_VISIBLE_DEVICES]"
`;

interface RunJson {
  runName: string;
  status: string;
  attempts: Array<{ gpus?: number[] }>;
}

describe('e2e: GPUs are assigned per machine (a stand-in nvidia-smi with 2 × A10G)', function () {
  this.timeout(180_000);
  // Four agents: two jobs holding the two GPUs, one waiting for a GPU, and one more for a job without GPU.
  const ctx = withRepoAndHome(WORKFLOWS, { maxParallelJobs: 4 });
  let bin: string;
  let markers: string;
  let env: Record<string, string>;
  before(() => {
    bin = fakeNvidiaSmi(tempDir('nvidia'), { gpus: 2 });
    markers = mkdtempSync('/var/tmp/dstack-gpu-markers-');
    // First on the CLI's PATH: its submit-time check and the local agents it starts (which inherit it) see the same cards.
    env = { PATH: `${bin}${delimiter}${process.env.PATH ?? ''}` };
  });
  after(() => removeAll(bin, markers));

  const cli = (args: string[]): Promise<CliResult> => dstack(args, { cwd: ctx.repo, home: ctx.home, env, timeoutMs: 90_000 });
  const logs = async (run: string): Promise<string> => {
    const r = await cli(['logs', run]);
    return r.stdout + r.stderr;
  };
  const ps = async (): Promise<RunJson[]> => JSON.parse((await cli(['ps', '-a', '--json'])).stdout) as RunJson[];
  const release = (run: string): void => writeFileSync(join(markers, run), '');
  const submit = async (workflow: string): Promise<string> => {
    const r = await cli(['run', workflow, '-d', '-e', `MARKERS=${markers}`]);
    expect(r.code, r.stderr).to.equal(0);
    const name = /Run ([a-z]+-[a-z]+-\d+)/.exec(r.stdout + r.stderr)?.[1];
    expect(name, r.stdout + r.stderr).to.be.a('string');
    return name ?? '';
  };
  const devicesOf = async (run: string): Promise<string | undefined> => /devices=\[([^\]]*)\]/.exec(await logs(run))?.[1];

  it('two `gpu: 1` jobs get GPU 0 and 1, a third waits (and says so) while a job without GPU runs; a released GPU goes to the third', async () => {
    const runs = [await submit('train'), await submit('train'), await submit('train')];
    // Two start with a GPU each; the third says it waits.
    const { given, waiting } = await waitFor(
      async () => {
        const given = new Map<string, string>();
        const waiting: string[] = [];
        for (const run of runs) {
          const text = await logs(run);
          const devices = /devices=\[([^\]]*)\]/.exec(text)?.[1];
          if (devices !== undefined) given.set(run, devices);
          else if (text.includes('dstack: waiting for 1 GPU: GPU 0 and 1 are held by other jobs on this machine')) waiting.push(run);
        }
        return given.size === 2 && waiting.length === 1 ? { given, waiting: waiting[0] ?? '' } : undefined;
      },
      90_000,
      'two jobs with a GPU each and one waiting',
    );
    expect([...given.values()].sort()).to.deep.equal(['0', '1']);

    // A job that asks for no GPU runs meanwhile, and sees none.
    const prep = await cli(['run', 'prep']);
    expect(prep.code, prep.stderr).to.equal(0);
    expect(prep.stdout).to.equal('devices=[]\n');
    expect(await devicesOf(waiting)).to.equal(undefined);

    // The first job ends: its GPU goes to the one that waited.
    const [first, second] = [...given.keys()];
    release(first ?? '');
    const freed = given.get(first ?? '');
    expect(await waitFor(() => devicesOf(waiting), 60_000, 'the waiting job to start')).to.equal(freed);
    expect(await logs(waiting)).to.match(/dstack: got GPU \d after waiting \d+s/);

    release(second ?? '');
    release(waiting);
    const done = await waitFor(
      async () => {
        const all = (await ps()).filter((r) => runs.includes(r.runName));
        return all.every((r) => r.status === 'done') ? all : undefined;
      },
      60_000,
      'the three jobs to be done',
    );
    // Each agent found the cards once, at its start.
    const logDir = join(ctx.home, 'local', 'logs');
    const found = readdirSync(logDir).map((f) => /"msg":"(GPUs: [^"]*)"/.exec(readFileSync(join(logDir, f), 'utf8'))?.[1]);
    expect(found).to.have.length.at.least(4);
    expect(new Set(found)).to.deep.equal(new Set(['GPUs: 2 × NVIDIA A10G, 23028 MiB (0, 1)']));
    // The attempt records name the GPU each job had.
    expect(Object.fromEntries(done.map((r) => [r.runName, r.attempts[0]?.gpus]))).to.deep.equal(Object.fromEntries(runs.map((r) => [r, [Number(r === waiting ? freed : given.get(r))]])));
  });
});
