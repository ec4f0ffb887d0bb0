import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { dstack, killAgents, makeHome, makeRepo, removeAll, tempDir } from '../support/cli.js';

// A wheel made here, installed with --no-index: pip never reaches the network.
const MAKE_WHEEL = `
import sys, zipfile
files = {
  'dstackprobe/__init__.py': 'VALUE = "probe"\\n',
  'dstackprobe-1.0.dist-info/METADATA': 'Metadata-Version: 2.1\\nName: dstackprobe\\nVersion: 1.0\\n',
  'dstackprobe-1.0.dist-info/WHEEL': 'Wheel-Version: 1.0\\nGenerator: dstack-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n',
}
files['dstackprobe-1.0.dist-info/RECORD'] = ''.join(p + ',,\\n' for p in list(files) + ['dstackprobe-1.0.dist-info/RECORD'])
with zipfile.ZipFile(sys.argv[1] + '/dstackprobe-1.0-py3-none-any.whl', 'w') as z:
  for p, t in files.items(): z.writestr(p, t)
`;

const SHOW = [
  'import os, shutil, sys, dstackprobe',
  'print("prefix", sys.prefix)',
  'print("base", sys.base_prefix)',
  'print("virtual_env", os.environ.get("VIRTUAL_ENV"))',
  'print("module", dstackprobe.__file__)',
  'print("python3", shutil.which("python3"))',
  'print("pip", shutil.which("pip"))',
].join('\n');

describe('e2e: requirements go into a cached virtual environment', function () {
  this.timeout(120_000);
  let repo: string;
  let home: string;
  let wheels: string;
  let userHome: string;
  // A package index that accepts and never answers: pip waits on it, as on a slow mirror.
  let silent: Server;
  const held: Socket[] = [];
  let connected: Promise<void>;
  before(async () => {
    let onConnect = (): void => undefined;
    connected = new Promise((r) => (onConnect = r));
    silent = createServer((socket) => {
      held.push(socket);
      onConnect();
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const address = silent.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    wheels = tempDir('wheels');
    userHome = tempDir('user-home');
    execFileSync('python3', ['-c', MAKE_WHEEL, wheels]);
    repo = makeRepo({
      '.dstack/workflows.yaml': `workflows:
  - name: probe
    provider: python
    file: show.py
    requirements: requirements.txt
  - name: wheel
    provider: bash
    commands:
      - python3 make_wheel.py dist
    artifacts: [dist]
  - name: from-dep
    provider: bash
    deps: [wheel]
    requirements: dep-requirements.txt
    commands:
      - python -c 'import dstackprobe; print(dstackprobe.VALUE)'
  - name: slow-pip
    provider: bash
    requirements: slow-requirements.txt
    commands: [echo never]
  - name: pip-user
    provider: python
    file: show.py
    requirements: user-requirements.txt
    env:
      - PIP_USER=1
      - HOME=${userHome}
  - name: probe-bash
    provider: bash
    requirements: requirements.txt
    commands:
      - python show.py
`,
      'show.py': `${SHOW}\n`,
      'make_wheel.py': `import os, sys\nos.makedirs(sys.argv[1], exist_ok=True)\n${MAKE_WHEEL}`,
      'slow-requirements.txt': `--no-index\n--find-links http://127.0.0.1:${port}/\ndstackprobe==1.0\n`,
      'user-requirements.txt': `# a pip set to install for the user\n--no-index\n--find-links ${wheels}\ndstackprobe==1.0\n`,
      'dep-requirements.txt': '--no-index\n--find-links dist\ndstackprobe==1.0\n',
      'requirements.txt': `--no-index\n--find-links ${wheels}\ndstackprobe==1.0\n`,
    });
    home = makeHome();
  });
  after(async () => {
    for (const socket of held) socket.destroy();
    silent.close();
    await killAgents(home);
    removeAll(repo, home, wheels, userHome);
  });

  const fields = (stdout: string): Record<string, string> =>
    Object.fromEntries(stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf(' ')), l.slice(l.indexOf(' ') + 1)]));

  it('installs once, and a second job with the same requirements reuses the venv; python, pip and sys.prefix are the venv', async () => {
    const first = await dstack(['run', 'probe'], { cwd: repo, home });
    expect(first.code, first.stderr).to.equal(0);
    expect(first.stderr).to.include('dstack: installing requirements.txt into a new virtual environment');
    const second = await dstack(['run', 'probe-bash'], { cwd: repo, home });
    expect(second.code, second.stderr).to.equal(0);
    expect(second.stderr).to.match(/dstack: reusing the virtual environment for requirements\.txt/);
    expect(second.stderr).not.to.include('installing');

    const a = fields(first.stdout);
    const b = fields(second.stdout);
    expect(b.prefix).to.equal(a.prefix);
    // One venv was made (one marker), under the agents' own folder, and both jobs ran in it.
    const venvs = join(home, 'local', 'venvs');
    const markers = readdirSync(venvs).filter((n) => existsSync(join(venvs, n, 'dstack-venv.json')) && !/^[0-9a-f]{32}$/.test(n));
    expect(markers).to.have.length(1);
    const venv = realpathSync(join(venvs, markers[0] ?? ''));
    expect(a.prefix).to.equal(venv);
    expect(a.virtual_env).to.equal(venv);
    expect(a.base).to.not.equal(venv);
    expect(a.module?.startsWith(`${venv}/`)).to.equal(true);
    expect(a.python3).to.equal(join(venv, 'bin', 'python3'));
    expect(a.pip).to.equal(join(venv, 'bin', 'pip'));

    // The machine's Python did not get the package: not in its site-packages, nor the user's.
    const marker = JSON.parse(readFileSync(join(venv, 'dstack-venv.json'), 'utf8')) as { interpreter: string };
    const system = spawnSync(marker.interpreter, ['-c', 'import dstackprobe'], { encoding: 'utf8' });
    expect(system.status, system.stderr).to.not.equal(0);
    expect(system.stderr).to.include("No module named 'dstackprobe'");
  });

  it('a pip configured to install for the user (PIP_USER=1) still installs into the venv, not ~/.local', async () => {
    const r = await dstack(['run', 'pip-user'], { cwd: repo, home });
    expect(r.code, r.stderr).to.equal(0);
    const f = fields(r.stdout);
    expect(f.module?.startsWith(`${f.prefix ?? '?'}/`), f.module).to.equal(true);
    expect(existsSync(join(userHome, '.local'))).to.equal(false);
  });

  it('installs requirements after the deps are restored: the file may name a wheel a dep made', async () => {
    const wheel = await dstack(['run', 'wheel'], { cwd: repo, home });
    expect(wheel.code, wheel.stderr).to.equal(0);
    const r = await dstack(['run', 'from-dep'], { cwd: repo, home });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.equal('probe\n');
  });

  it('dstack stop during the pip install ends it: the run is stopped, the job never starts, no half-made venv is kept', async () => {
    const sub = await dstack(['run', '-d', 'slow-pip'], { cwd: repo, home });
    const name = /Run ([a-z]+-[a-z]+-\d+)/.exec(sub.stdout)?.[1] ?? '';
    await connected;
    const stop = await dstack(['stop', name, '-y'], { cwd: repo, home });
    expect(stop.code, stop.stderr).to.equal(0);
    expect(stop.stdout).to.equal(`Run ${name} stopped.\n`);
    const logs = await dstack(['logs', name], { cwd: repo, home });
    expect(logs.stdout).to.equal('');
    expect(logs.stderr).to.include('dstack: installing slow-requirements.txt into a new virtual environment');
    const venvs = join(home, 'local', 'venvs');
    const complete = readdirSync(venvs).filter((n) => existsSync(join(venvs, n, 'dstack-venv.json')));
    expect(readdirSync(venvs).filter((n) => !complete.includes(n))).to.deep.equal([]);
  });

  it('fails the run with one clear line when the requirements file is missing', async () => {
    const missing = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: m\n    provider: bash\n    requirements: nope.txt\n    commands: [echo never]\n' });
    try {
      const m = await dstack(['run', 'm'], { cwd: missing, home });
      expect(m.code).to.equal(1);
      expect(m.stdout).to.equal('');
      expect(m.stderr).to.include('requirements file `nope.txt` does not exist in the repo');
    } finally {
      removeAll(missing);
    }
  });
});
