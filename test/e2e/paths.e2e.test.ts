import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, truncateSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dstack, killAgents, makeHome, makeRepo, removeAll, tempDir } from '../support/cli.js';

const nameOf = (text: string): string => /Run ([a-z]+-[a-z]+-\d+)/.exec(text)?.[1] ?? '';

/** Every byte the local store holds, to show what never reached it. */
function storeBytes(home: string): Buffer {
  const all: Buffer[] = [];
  const walk = (d: string): void => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (lstatSync(p).isDirectory()) walk(p);
      else if (lstatSync(p).isFile()) all.push(readFileSync(p));
    }
  };
  walk(join(home, 'local', 'store'));
  return Buffer.concat(all);
}

/** Rewrites a finished run's artifact index in the local store, as a hostile store could. */
function forgeIndex(home: string, runName: string, path: string): void {
  const repos = join(home, 'local', 'store', 'objects', 'repos');
  const file = readdirSync(repos, { recursive: true }).map(String).find((p) => p.endsWith(`${runName}/artifacts.json`)) ?? '';
  const index = JSON.parse(readFileSync(join(repos, file), 'utf8')) as { artifacts: Array<{ path: string }> };
  for (const a of index.artifacts) a.path = path;
  writeFileSync(join(repos, file), JSON.stringify(index));
}

describe('e2e: nothing escapes its folder (artifact paths, links, code capture)', function () {
  this.timeout(120_000);
  let repo: string;
  let home: string;
  let outside: string;
  const run = (args: string[], cwd = repo) => dstack(args, { cwd, home });
  before(() => {
    // Not under /tmp, which the local sandbox replaces with the job's own: the links job reads through its links.
    outside = mkdtempSync(join('/var/tmp', 'dstack-outside-'));
    writeFileSync(join(outside, 'secret.txt'), 'the secret 7f3a9c\n');
    writeFileSync(join(outside, 'shared.txt'), 'shared outside the repo\n');
    repo = makeRepo({
      '.dstack/workflows.yaml': `workflows:
  - name: produce
    provider: bash
    commands: [mkdir -p output, echo made > output/f]
    artifacts: [output]
  - name: consume
    provider: bash
    deps: [{workflow: produce}]
    commands: [cat output/f]
  - name: leak
    provider: bash
    commands: [ln -s ${outside} leak]
    artifacts: [leak]
  - name: links
    provider: bash
    commands: [readlink abs-link up-link untracked-link, cat abs-link up-link]
  - name: big
    provider: bash
    commands: [sha256sum data/big.bin | cut -c1-64]
  - name: make-venv
    provider: bash
    commands: [python3 -m venv --without-pip env]
    artifacts: [env]
  - name: use-venv
    provider: bash
    deps: [{workflow: make-venv}]
    commands:
      - find env -type l -printf '%p -> %l\\n' | sort
      - grep '^home' env/pyvenv.cfg
      - env/bin/python -c 'print("venv runs")'
`,
    });
    // Committed links git allows: one absolute, one that climbs out of the repo.
    symlinkSync(join(outside, 'shared.txt'), join(repo, 'abs-link'));
    symlinkSync(`${'../'.repeat(20)}${outside.slice(1)}/shared.txt`, join(repo, 'up-link'));
    execFileSync('git', ['add', 'abs-link', 'up-link'], { cwd: repo });
    execFileSync('git', ['commit', '-q', '-m', 'links'], { cwd: repo });
    symlinkSync('/etc/hostname', join(repo, 'untracked-link'));
    home = makeHome({ untrackedWarnBytes: 10 * 1024 * 1024 });
  });
  after(async () => {
    await killAgents(home);
    removeAll(repo, home, outside);
  });

  it('an artifact path climbing out of the working dir is refused at `dstack run` with file:line:col, and so is -a', async () => {
    const bad = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: evil\n    provider: bash\n    commands: [echo hi]\n    artifacts:\n      - path: ../../../../../../../../../../tmp/x\n' });
    try {
      const r = await run(['run', 'evil'], bad);
      expect(r.code).to.not.equal(0);
      expect(r.stderr.trim()).to.equal(
        '.dstack/workflows.yaml:6:15: workflow `evil`: `artifacts.0.path`: artifact `../../../../../../../../../../tmp/x` climbs out of the working dir: use a path inside it (no `..` leading out), or an absolute path',
      );
      expect(JSON.parse((await run(['ps', '-a', '--json'], bad)).stdout)).to.deep.equal([]);
    } finally {
      removeAll(bad);
    }
    const a = await run(['run', 'produce', '-a', '../../x', '--dry-run']);
    expect(a.code).to.equal(2);
    expect(a.stderr.trim()).to.equal('-a ../../x: the artifact path climbs out of the working dir: use a path inside it (no `..` leading out), or an absolute path');
  });

  let produced = '';
  it('a `..` artifact path from the store is refused on download, and nothing is written outside -o', async () => {
    const p = await run(['run', 'produce']);
    expect(p.code, p.stderr).to.equal(0);
    produced = nameOf(p.stderr);
    const victim = tempDir('victim');
    forgeIndex(home, produced, `${'../'.repeat(30)}${victim.slice(1)}/x`);
    const out = join(tempDir('dl'), 'anywhere');
    try {
      const d = await run(['artifacts', 'download', produced, '-o', out]);
      expect(d.code).to.equal(1);
      expect(d.stderr.trim()).to.equal(`refusing artifact path \`${'../'.repeat(30)}${victim.slice(1)}/x\`: it climbs out of its folder (..)`);
      expect(readdirSync(victim)).to.deep.equal([]);
      expect(existsSync(out)).to.equal(false);
    } finally {
      removeAll(victim, join(out, '..'));
    }
  });

  it('a `..` artifact path from the store is refused when a dep is restored, and the job fails saying so', async () => {
    const c = await run(['run', 'consume']);
    expect(c.code).to.equal(1);
    expect(c.stderr).to.include(`could not restore dep workflow \`produce\` (run ${produced}), artifact ${'../'.repeat(30)}`);
    expect(c.stderr).to.include('it climbs out of its folder (..)');
  });

  it('an artifact path that is a symlink to a folder outside is saved as the link; the secret never reaches the store', async () => {
    const l = await run(['run', 'leak']);
    expect(l.code, l.stderr).to.equal(0);
    expect(storeBytes(home).includes('the secret 7f3a9c')).to.equal(false);
    const out = tempDir('leakdl');
    try {
      const d = await run(['artifacts', 'download', nameOf(l.stderr), '-o', out]);
      expect(d.code, d.stderr).to.equal(0);
      expect(readlinkSync(join(out, 'leak'))).to.equal(outside);
    } finally {
      removeAll(out);
    }
  });

  it('committed and untracked symlinks that lead out of the repo are rebuilt as the links they are', async () => {
    const r = await run(['run', 'links']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.equal(
      `${join(outside, 'shared.txt')}\n${'../'.repeat(20)}${outside.slice(1)}/shared.txt\n/etc/hostname\nshared outside the repo\nshared outside the repo\n`,
    );
  });

  it('a repo with a submodule is refused at `dstack run` with one clear line', async () => {
    const lib = makeRepo({ 'lib.txt': 'lib\n' });
    const withSub = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: hi\n    provider: bash\n    commands: [ls vendor/lib]\n' });
    try {
      execFileSync('git', ['-c', 'protocol.file.allow=always', 'submodule', '-q', 'add', lib, 'vendor/lib'], { cwd: withSub, stdio: 'ignore' });
      execFileSync('git', ['commit', '-q', '-m', 'submodule'], { cwd: withSub });
      const r = await run(['run', 'hi'], withSub);
      expect(r.code).to.equal(1);
      expect(r.stderr.trim()).to.equal(
        '`vendor/lib` is a git submodule, which dstack does not capture (the job would see an empty folder): copy the files into the repo, or remove the submodule with `git rm vendor/lib`',
      );
      expect(JSON.parse((await run(['ps', '-a', '--json'], withSub)).stdout)).to.deep.equal([]);
    } finally {
      removeAll(lib, withSub);
    }
  });

  it('large untracked files are streamed and warned about, naming the biggest; the job sees them byte for byte', async () => {
    mkdirSync(join(repo, 'data'), { recursive: true });
    // A 50 MiB sparse file: zeros between a few bytes at each end, so that a cut or shifted copy would show.
    const big = join(repo, 'data', 'big.bin');
    writeFileSync(big, 'head');
    truncateSync(big, 50 * 1024 * 1024 - 4);
    appendFileSync(big, 'tail');
    writeFileSync(join(repo, 'data', 'small.txt'), 'small\n');
    try {
      const want = createHash('sha256').update(readFileSync(join(repo, 'data', 'big.bin'))).digest('hex');
      const r = await run(['run', 'big']);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.equal(`${want}\n`);
      expect(r.stderr.split('\n')[0]).to.equal(
        'warning: untracked files add up to 50.0 MB, over the 10.0 MB limit (local.untrackedWarnBytes in config.yaml), and are captured with every run: data/big.bin (50.0 MB), data/small.txt (6 B). Add them to .gitignore, or save them as an artifact and use them through deps.',
      );
    } finally {
      rmSync(join(repo, 'data'), { recursive: true, force: true });
    }
  });

  it('a venv saved as an artifact is restored through a dep, with no link into a job folder, and runs', async () => {
    const m = await run(['run', 'make-venv']);
    expect(m.code, m.stderr).to.equal(0);
    const u = await run(['run', 'use-venv']);
    expect(u.code, u.stderr).to.equal(0);
    const lines = u.stdout.trim().split('\n');
    expect(lines[lines.length - 1]).to.equal('venv runs');
    expect(lines.some((l) => l.startsWith('env/bin/python -> '))).to.equal(true);
    const work = join(home, 'local', 'work');
    expect(lines.filter((l) => l.includes(work))).to.deep.equal([]);
  });
});
