import { expect } from 'chai';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { dstack, killAgents, makeHome, makeRepo, removeAll, tempDir, waitFor } from '../support/cli.js';
import { fakeConda, type FakeConda } from '../support/fake-conda.js';

// `python: 3.7` on a machine whose only Python is the system's: the CLI and its agents get the
// system's PATH (no ~/.pyenv shims) and a HOME of their own (no ~/.pyenv/versions), with or
// without a fake `conda` first on PATH.
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const WORKFLOWS = `workflows:
  - name: py37
    provider: bash
    python: 3.7
    commands:
      - python --version
      - python -c 'print("the job ran")'
  - name: py38
    provider: bash
    python: 3.8
    commands:
      - python --version
  - name: activate
    provider: bash
    commands:
      - conda activate myenv
      - echo "after activate"
`;

describe('e2e: python: X.Y from a Conda env the agent makes with the conda on PATH', function () {
  this.timeout(90_000);
  let repo: string;
  let userHome: string;
  let condaDir: string;
  let conda: FakeConda;
  const homes: string[] = [];
  const dirs: string[] = [];
  before(function () {
    const has37 = ['3.7', '3.8'].flatMap((v) => [`/opt/conda/envs/py${v}/bin/python`, ...SYSTEM_PATH.split(':').map((d) => join(d, `python${v}`))]).filter((p) => existsSync(p));
    // A machine with Python 3.7 of its own cannot show the refusal, nor that conda was what served it.
    if (has37.length > 0) this.skip();
    repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
    userHome = tempDir('user-home');
    condaDir = tempDir('conda');
    conda = fakeConda(condaDir);
  });
  after(async () => {
    for (const home of homes) await killAgents(home);
    if (repo) removeAll(repo, userHome, condaDir, ...homes, ...dirs);
  });
  const newHome = (config: Record<string, unknown> = {}): string => {
    const home = makeHome(config);
    homes.push(home);
    return home;
  };

  it('with conda on PATH: the first run creates py3.7 in the agents\' cache (its output in the logs), the second reuses it', async () => {
    const home = newHome();
    const env = { PATH: `${conda.bin}:${SYSTEM_PATH}`, HOME: userHome };
    const prefix = join(home, 'local', 'conda', 'py3.7');
    const first = await dstack(['run', 'py37'], { cwd: repo, home, env });
    expect(first.code, first.stderr).to.equal(0);
    expect(first.stdout).to.equal('Python 3.7.99 (fake env)\nthe job ran\n');
    expect(first.stderr).to.include(`dstack: creating a Conda env for Python 3.7 in ${prefix} (once: later jobs reuse it)\nfake conda: created ${prefix} with Python 3.7\n`);
    expect(conda.calls()).to.deep.equal([`create --prefix ${prefix} python=3.7 --yes --quiet`]);
    expect(readdirSync(prefix)).to.include('dstack-conda-env.json');

    const second = await dstack(['run', 'py37'], { cwd: repo, home, env });
    expect(second.code, second.stderr).to.equal(0);
    expect(second.stdout).to.equal('Python 3.7.99 (fake env)\nthe job ran\n');
    expect(second.stderr).to.not.include('Conda env');
    expect(conda.calls()).to.have.length(1);
  });

  it('`conda activate` works in a job\'s commands: the agent defines conda\'s shell function first when they use conda', async () => {
    // The fake conda lives under /tmp, which the sandbox gives each job empty.
    const home = newHome({ sandbox: 'off' });
    const env = { PATH: `${conda.bin}:${SYSTEM_PATH}`, HOME: userHome };
    const r = await dstack(['run', 'activate'], { cwd: repo, home, env });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.equal('fake conda: activated myenv\nafter activate\n');
  });

  it('without conda: refused at submit with one line naming what was looked for and the fix; exit 2; no run recorded', async () => {
    const home = newHome();
    const env = { PATH: SYSTEM_PATH, HOME: userHome };
    const r = await dstack(['run', 'py37'], { cwd: repo, home, env });
    expect(r.code).to.equal(2);
    expect(r.stdout).to.equal('');
    expect(r.stderr).to.equal(
      '.dstack/workflows.yaml:2: workflow `py37` asks for `python: 3.7`, which no interpreter on this machine provides (looked for /opt/conda/envs/py3.7, `conda` on PATH, python3.7 on PATH and ~/.pyenv/versions/3.7*): install Python 3.7 or conda, or change `python:`\n',
    );
    const ps = await dstack(['ps', '-a', '--json'], { cwd: repo, home, env });
    expect(ps.code, ps.stderr).to.equal(0);
    expect(JSON.parse(ps.stdout)).to.deep.equal([]);
  });

  it('two agents at once: one creates py3.8 while the other waits for it; conda runs once and both jobs use the env', async () => {
    const home = newHome({ maxParallelJobs: 2 });
    const gatedDir = tempDir('conda-gated');
    dirs.push(gatedDir);
    const gated = fakeConda(gatedDir, { gate: true });
    const env = { PATH: `${gated.bin}:${SYSTEM_PATH}`, HOME: userHome };
    const names: string[] = [];
    for (let i = 0; i < 2; i++) {
      const sub = await dstack(['run', '-d', 'py38'], { cwd: repo, home, env });
      expect(sub.code, sub.stderr).to.equal(0);
      names.push(/Run ([a-z]+-[a-z]+-\d+)/.exec(sub.stdout)?.[1] ?? '');
    }
    const logs = async (name: string): Promise<{ stdout: string; stderr: string }> => dstack(['logs', name], { cwd: repo, home, env });
    // One agent's conda has started, and the other agent has seen its lock: only then may conda finish.
    await waitFor(
      async () => (gated.calls().length === 1 && (await Promise.all(names.map(logs))).some((l) => l.stderr.includes('dstack: waiting for another job to finish creating the Conda env for Python 3.8')) ? true : undefined),
      60_000,
      'one conda create and one job waiting for it',
    );
    gated.open();
    const agents: string[] = [];
    for (const name of names) {
      const run = await waitFor(
        async () => {
          const ps = await dstack(['ps', name, '--json'], { cwd: repo, home, env });
          const r = (JSON.parse(ps.stdout) as Array<{ status: string; attempts: Array<{ agentId: string }> }>)[0];
          return r !== undefined && ['done', 'failed', 'stopped'].includes(r.status) ? r : undefined;
        },
        60_000,
        `run ${name} to end`,
      );
      expect(run.status, (await logs(name)).stderr).to.equal('done');
      expect((await logs(name)).stdout).to.equal('Python 3.8.99 (fake env)\n');
      agents.push(run.attempts.at(-1)?.agentId ?? '');
    }
    // Two agents, each with its own process.
    expect(new Set(agents).size).to.equal(2);
    expect(gated.calls()).to.deep.equal([`create --prefix ${join(home, 'local', 'conda', 'py3.8')} python=3.8 --yes --quiet`]);
  });

  it('dstack stop while conda creates the env: conda is killed, the run is stopped, nothing half-made is kept', async () => {
    const home = newHome();
    const gatedDir = tempDir('conda-stop');
    dirs.push(gatedDir);
    const gated = fakeConda(gatedDir, { gate: true });
    const env = { PATH: `${gated.bin}:${SYSTEM_PATH}`, HOME: userHome };
    const sub = await dstack(['run', '-d', 'py37'], { cwd: repo, home, env });
    const name = /Run ([a-z]+-[a-z]+-\d+)/.exec(sub.stdout)?.[1] ?? '';
    await waitFor(() => (gated.calls().length === 1 ? true : undefined), 30_000, 'conda create to start');
    const stop = await dstack(['stop', name, '-y'], { cwd: repo, home, env });
    expect(stop.code, stop.stderr).to.equal(0);
    expect(stop.stdout).to.equal(`Run ${name} stopped.\n`);
    const logs = await dstack(['logs', name], { cwd: repo, home, env });
    expect(logs.stdout).to.equal('');
    expect(logs.stderr).to.include('dstack: creating a Conda env for Python 3.7');
    const conda = join(home, 'local', 'conda');
    expect(existsSync(join(conda, 'py3.7', 'dstack-conda-env.json'))).to.equal(false);
    expect(existsSync(join(conda, 'py3.7.lock'))).to.equal(false);
  });
});
