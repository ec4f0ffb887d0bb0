import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { refersToOtherFiles, requirementsEnv, VENV_MARKER } from '../../agent/python-env.js';
import { removeAll, tempDir } from '../support/cli.js';

describe('python-env: venvs for requirements', function () {
  this.timeout(90_000);
  let dir: string;
  beforeEach(() => (dir = tempDir('venv')));
  afterEach(() => removeAll(dir));

  it('two agents building the same venv at once end up in one: the first link wins, the other build is removed', async () => {
    const interpreter = execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();
    writeFileSync(join(dir, 'requirements.txt'), '# nothing to install: pip must not reach the network\n');
    const said: string[] = [];
    const make = (): ReturnType<typeof requirementsEnv> =>
      requirementsEnv({
        interpreter,
        requirements: 'requirements.txt',
        cwd: dir,
        venvRoot: join(dir, 'venvs'),
        jobDir: join(dir, 'job'),
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir },
        say: (d) => said.push(d.toString()),
      });
    const [a, b] = await Promise.all([make(), make()]);
    expect(a.dir).to.equal(b.dir);
    const names = readdirSync(join(dir, 'venvs')).sort();
    expect(names).to.have.length(2);
    const [link, built] = names as [string, string];
    expect(built).to.equal(`${link}-${built.slice(link.length + 1)}`);
    expect(readlinkSync(join(dir, 'venvs', link))).to.equal(built);
    expect(readdirSync(a.dir)).to.include(VENV_MARKER);
    expect(said.filter((l) => l.includes('into a new virtual environment'))).to.have.length(2);
    // A third job finds it ready and runs no pip at all.
    said.length = 0;
    expect((await make()).dir).to.equal(a.dir);
    expect(said).to.have.length(1);
    expect(said[0]).to.match(/^dstack: reusing the virtual environment for requirements\.txt \(Python 3\.\d+\.\d+\)\n$/);
  });

  it('does not cache a requirements file that reads other local files', () => {
    expect(refersToOtherFiles('numpy==2.0\n# -r not-really.txt\ntorch  # cpu\n--find-links /opt/wheels\n')).to.equal(false);
    for (const line of ['-r base.txt', '--requirement=base.txt', '-c constraints.txt', '-e .', '--editable ./pkg', './dist/x.whl', '/opt/x.whl', 'x @ file:///opt/x']) {
      expect(refersToOtherFiles(`numpy\n${line}\n`), line).to.equal(true);
    }
  });
});
