import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { listGpus } from '../../coordinator/capability.js';
import { SHARED_CORPUS } from '../support/corpus.js';
import { dstack, killAgents, makeHome, makeRepo, removeAll, tempDir } from '../support/cli.js';

// The corpus's dev-environments file, from ../shared when it is there; else the same text.
const CORPUS_FILE = join(SHARED_CORPUS, 'dstackai-dstack-examples__f8c6f11__6.yaml');
const DEV_ENVIRONMENTS = existsSync(CORPUS_FILE)
  ? readFileSync(CORPUS_FILE, 'utf8')
  : 'workflows:\n  - name: ide-code\n    provider: code\n\n  - name: ide-code-gpu\n    provider: code\n    resources:\n      memory: 64GB\n      gpu: 1\n\n  - name: ide-lab\n    provider: lab\n\n  - name: ide-notebook\n    provider: notebook\n';

describe('e2e: dstack run refuses at submit what this machine cannot run (dev-environments.yaml)', function () {
  this.timeout(60_000);
  let repo: string;
  let home: string;
  let bin: string;
  before(() => {
    repo = makeRepo({ '.dstack/workflows/dev-environments.yaml': DEV_ENVIRONMENTS });
    home = makeHome();
    // A PATH with git (code capture needs it) and nothing else: no jupyter, no code-server, no nvidia-smi.
    bin = tempDir('bin');
    mkdirSync(bin, { recursive: true });
    symlinkSync(execFileSync('sh', ['-c', 'command -v git'], { encoding: 'utf8' }).trim(), join(bin, 'git'));
  });
  after(async () => {
    await killAgents(home);
    removeAll(repo, home, bin);
  });

  const runs = async (): Promise<string> => (await dstack(['ps', '-a', '--json'], { cwd: repo, home })).stdout;

  it('ide-lab without jupyter-lab: exit 2, one line naming the file, what is missing and how to install it; no run', async () => {
    const before = await runs();
    const r = await dstack(['run', 'ide-lab'], { cwd: repo, home, env: { PATH: bin } });
    expect(r.code).to.equal(2);
    expect(r.stdout).to.equal('');
    expect(r.stderr).to.match(/^\.dstack\/workflows\/dev-environments\.yaml:\d+: workflow `ide-lab` \(`provider: lab`\) needs JupyterLab, and `jupyter-lab` is not on PATH: install it with `pip install jupyterlab`[^\n]*\n$/);
    expect(await runs()).to.equal(before);
  });

  it('ide-code-gpu on a machine without a GPU: refused with what the machine has and `--gpu 0`', async function () {
    if ((await listGpus(process.env.PATH ?? '')).length > 0) this.skip();
    const r = await dstack(['run', 'ide-code-gpu'], { cwd: repo, home, env: { PATH: bin } });
    expect(r.code).to.equal(2);
    const lines = r.stderr.trimEnd().split('\n');
    // The missing code-server is its own line; the resources are one line with the overrides.
    const resources = lines.find((l) => l.includes('asks for')) ?? '';
    expect(resources).to.match(/^\.dstack\/workflows\/dev-environments\.yaml:\d+: workflow `ide-code-gpu` asks for 1 GPU( and 64GB of memory)?, and this machine has no GPU, [\d.]+GB of memory and \d+ CPUs?: run it here anyway with `dstack run ide-code-gpu --gpu 0( --memory \d+[GM]B)?`$/);
    expect(lines.filter((l) => l !== resources)).to.satisfy((rest: string[]) => rest.every((l) => /workflow `ide-code-gpu` \(`provider: code`\) needs code-server/.test(l)));
  });
});
