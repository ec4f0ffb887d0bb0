import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, removeAll, tempDir } from '../support/cli.js';
import { requireTool } from '../support/tools.js';

function script(file: string, body: string): void {
  mkdirSync(join(file, '..'), { recursive: true });
  writeFileSync(file, `#!/bin/bash\n${body}\n`);
  chmodSync(file, 0o755);
}

// ami/install-dev-servers.sh (a step of ami/provision.sh) with apt-get, npm and conda of the test's own:
// each logs how it was called; npm and conda "install" programs that print the version they were asked for.
describe('ami/install-dev-servers.sh: code-server, JupyterLab and the Notebook on the agent image, pinned', () => {
  let dir: string;
  let log: string;
  beforeEach(() => {
    dir = tempDir('ami-dev');
    log = join(dir, 'calls.log');
    script(join(dir, 'bin', 'apt-get'), `echo "apt-get $*" >> '${log}'`);
    script(
      join(dir, 'bin', 'npm'),
      `prefix=
while [ $# -gt 0 ]; do case "$1" in --prefix) prefix=$2; shift;; code-server@*) pkg=$1;; esac; shift; done
echo "npm $pkg unsafe_perm=$npm_config_unsafe_perm yes=$npm_config_yes rg=$(tar -tzf "$TMPDIR/vscode-ripgrep-cache-1.15.11/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz")" >> '${log}'
mkdir -p "$prefix/node_modules/.bin"
printf '#!/bin/sh\\necho %s abc with Code 1.99.3\\n' "\${pkg#code-server@}" > "$prefix/node_modules/.bin/code-server"
chmod +x "$prefix/node_modules/.bin/code-server"`,
    );
    script(
      join(dir, 'conda', 'bin', 'conda'),
      `echo "conda $*" >> '${log}'
bin=$(dirname "$0")
for a in "$@"; do case "$a" in
  jupyterlab=*) printf '#!/bin/sh\\necho %s\\n' "\${a#*=}" > "$bin/jupyter-lab"; chmod +x "$bin/jupyter-lab";;
  notebook=*) printf '#!/bin/sh\\necho %s\\n' "\${a#*=}" > "$bin/jupyter-notebook"; chmod +x "$bin/jupyter-notebook";;
esac; done`,
    );
  });
  afterEach(() => removeAll(dir));

  const provision = (env: Record<string, string> = {}) =>
    spawnSync('bash', [join(ROOT, 'ami', 'install-dev-servers.sh')], {
      encoding: 'utf8',
      env: {
        PATH: `${join(dir, 'bin')}:${process.env.PATH ?? ''}`,
        HOME: dir,
        DSTACK_CONDA_DIR: join(dir, 'conda'),
        DSTACK_CODE_SERVER_DIR: join(dir, 'code-server'),
        DSTACK_BIN_DIR: join(dir, 'local-bin'),
        ...env,
      },
    });

  it("installs code-server 4.99.4 from npm (with the build deps, Debian's ripgrep and npm's root switches) and JupyterLab and the Notebook in the base env, and links all three onto the agent's PATH", function () {
    requireTool(this, 'rg');
    const r = provision();
    expect(r.status, r.stderr).to.equal(0);
    expect(readFileSync(log, 'utf8').split('\n')).to.deep.equal([
      'apt-get -o DPkg::Lock::Timeout=600 update -qq',
      'apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends build-essential pkg-config python3 libkrb5-dev libsecret-1-dev libx11-dev libxkbfile-dev ripgrep',
      'npm code-server@4.99.4 unsafe_perm=true yes=true rg=rg',
      'conda install -y -q -n base -c conda-forge jupyterlab=4.2.5 notebook=7.2.2',
      'conda clean -afy -q',
      '',
    ]);
    expect(readlinkSync(join(dir, 'local-bin', 'code-server'))).to.equal(join(dir, 'code-server', 'node_modules', '.bin', 'code-server'));
    expect(readlinkSync(join(dir, 'local-bin', 'jupyter-lab'))).to.equal(join(dir, 'conda', 'bin', 'jupyter-lab'));
    expect(readlinkSync(join(dir, 'local-bin', 'jupyter-notebook'))).to.equal(join(dir, 'conda', 'bin', 'jupyter-notebook'));
    expect(r.stdout).to.include('[dstack-ami] code-server: ').and.include('(4.99.4 abc with Code 1.99.3)').and.include('(4.2.5)').and.include('(7.2.2)');
  });

  it('refuses an install whose version is not the pinned one', function () {
    requireTool(this, 'rg');
    // conda answers with another version than asked: the image must not ship it silently.
    script(join(dir, 'conda', 'bin', 'conda'), `echo "conda $*" >> '${log}'\nbin=$(dirname "$0"); printf '#!/bin/sh\\necho 3.0.0\\n' > "$bin/jupyter-lab"; chmod +x "$bin/jupyter-lab"`);
    const r = provision();
    expect(r.status).to.equal(1);
    expect(r.stderr).to.equal(`[dstack-ami] ERROR: jupyter: jupyter-lab --version says 3.0.0, expected 4.2.5\n`);
    expect(existsSync(join(dir, 'local-bin', 'jupyter-lab'))).to.equal(false);
  });

  it('offline, skips all three with one line and installs nothing', () => {
    mkdirSync(join(dir, 'offline'));
    const r = provision({ DSTACK_AMI_OFFLINE_DIR: join(dir, 'offline') });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.equal(
      '[dstack-ami] SKIPPED code-server, JupyterLab and the Notebook: offline: they come from npm and conda-forge; `code`, `lab` and `notebook` jobs will need them on PATH\n',
    );
    expect(existsSync(log)).to.equal(false);
  });
});
