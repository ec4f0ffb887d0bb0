import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, removeAll, tempDir } from '../support/cli.js';
import { requireTool } from '../support/tools.js';

const RG_TARBALL = 'vscode-ripgrep-cache-1.15.11/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz';

// scripts/ci-code-server.sh (what .ci/run calls) and scripts/install-code-server.sh (which the AMI
// reuses), with an `npm` of the test's own on PATH: it logs how it was called and what the ripgrep
// cache holds at that moment, and "installs" a code-server that prints a version.
describe('scripts/ci-code-server.sh: code-server for CI, cached per day', () => {
  let dir: string;
  let bin: string;
  let log: string;
  beforeEach(() => {
    dir = tempDir('ci-code-server');
    bin = join(dir, 'bin');
    log = join(dir, 'npm.log');
    mkdirSync(bin);
    writeFileSync(
      join(bin, 'npm'),
      `#!/bin/bash
set -e
prefix=
while [ $# -gt 0 ]; do case "$1" in --prefix) prefix=$2; shift;; code-server@*) pkg=$1;; esac; shift; done
echo "$pkg unsafe_perm=$npm_config_unsafe_perm yes=$npm_config_yes rg=$(tar -tzf "$TMPDIR/${RG_TARBALL}")" >> '${log}'
mkdir -p "$prefix/node_modules/.bin"
printf '#!/bin/sh\\necho 4.99.4 abc with Code 1.99.3\\n' > "$prefix/node_modules/.bin/code-server"
chmod +x "$prefix/node_modules/.bin/code-server"
`,
    );
    chmodSync(join(bin, 'npm'), 0o755);
  });
  afterEach(() => removeAll(dir));

  const run = (cacheRoot: string) =>
    spawnSync('bash', [join(ROOT, 'scripts', 'ci-code-server.sh'), cacheRoot], { encoding: 'utf8', env: { PATH: `${bin}:${process.env.PATH ?? ''}`, HOME: dir } });
  const today = spawnSync('date', ['+%F'], { encoding: 'utf8' }).stdout.trim();

  it("installs code-server@4.99.4 into today's folder with the ripgrep tarball and npm's root switches, once a day, and removes older days", function () {
    requireTool(this, 'rg');
    const cache = join(dir, 'cache');
    mkdirSync(join(cache, '2001-02-03', 'code-server-4.99.4'), { recursive: true });
    mkdirSync(join(cache, 'code-server-4.99.1'), { recursive: true });
    const first = run(cache);
    expect(first.status, first.stderr).to.equal(0);
    expect(first.stdout).to.equal(`${cache}/${today}/code-server-4.99.4/node_modules/.bin/code-server\n`);
    expect(readFileSync(log, 'utf8')).to.equal('code-server@4.99.4 unsafe_perm=true yes=true rg=rg\n');
    expect(existsSync(join(cache, '2001-02-03')), 'an older day').to.equal(false);
    expect(existsSync(join(cache, 'code-server-4.99.1')), 'not a day folder: left alone').to.equal(true);
    const second = run(cache);
    expect(second.stdout).to.equal(first.stdout);
    expect(readFileSync(log, 'utf8').split('\n').length, 'npm ran once').to.equal(2);
  });

  it('without ripgrep, says how to get it', () => {
    // PATH without rg: only the test's bin and what bash, mktemp and tar need.
    const tools = join(dir, 'tools');
    mkdirSync(tools);
    for (const t of ['bash', 'mkdir', 'date', 'dirname', 'mktemp', 'rm', 'cat']) {
      const where = spawnSync('sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).stdout.trim();
      writeFileSync(join(tools, t), `#!/bin/sh\nexec ${where} "$@"\n`);
      chmodSync(join(tools, t), 0o755);
    }
    const r = spawnSync('/bin/bash', [join(ROOT, 'scripts', 'ci-code-server.sh'), join(dir, 'cache')], { encoding: 'utf8', env: { PATH: `${bin}:${tools}` } });
    expect(r.status).to.equal(1);
    expect(r.stderr).to.equal('install-code-server: ripgrep (rg) is needed: apt-get install ripgrep\n');
  });
});
