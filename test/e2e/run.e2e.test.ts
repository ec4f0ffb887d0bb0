import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { dstack, killAgents, makeHome, makeRepo, removeAll, tempDir } from '../support/cli.js';

const WORKFLOWS = `workflows:
  - name: hello
    help: "Prints a greeting"
    provider: bash
    env:
      - GREETING=Hello
      - FROM_SHELL
    commands:
      - echo "$GREETING, world! run=$RUN_NAME job=$JOB_ID unbuffered=$PYTHONUNBUFFERED shell=$FROM_SHELL"
      - echo "args=[\${{ run.args }}]"
      - echo "to stderr" >&2
  - name: in-dir
    provider: bash
    working_dir: src
    commands:
      - pwd | sed 's|.*/||'
      - cat data.txt
  - name: py
    provider: python
    file: src/main.py
    requirements: src/requirements.txt
  - name: py-args
    provider: bash
    python: 3.11
    commands:
      - python src/main.py \${{ run.args }}
  - name: exit3
    provider: bash
    commands:
      - echo before
      - exit 3
      - echo never
  - name: no-python
    provider: bash
    python: 2.1
    commands: [python --version]
`;

const FILES = {
  '.dstack/workflows.yaml': WORKFLOWS,
  'src/data.txt': 'data in src\n',
  'src/main.py': 'import sys\nprint("python says", sys.version_info[0], sys.argv[1:])\n',
  'src/requirements.txt': '',
};

describe('e2e: dstack run on the embedded local backend', function () {
  this.timeout(60_000);
  let repo: string;
  let home: string;
  before(() => {
    repo = makeRepo(FILES);
    home = makeHome();
  });
  after(async () => {
    await killAgents(home);
    removeAll(repo, home);
  });

  it('runs a bash workflow attached: output, env, args, exit 0', async () => {
    const r = await dstack(['run', 'hello', '--lr', '0.1', 'two words'], { cwd: repo, home, env: { FROM_SHELL: 'passed' } });
    expect(r.code, r.stderr).to.equal(0);
    // A bare env name is a secret pinned to the run: the job gets it, its output shows it masked.
    expect(r.stdout).to.match(/^Hello, world! run=[a-z]+-[a-z]+-\d+ job=[0-9a-f]+ unbuffered=1 shell=\*\*\*$/m);
    expect(r.stdout).to.include("args=[--lr 0.1 'two words']");
    expect(r.stderr).to.include('to stderr');
  });

  it('runs in working_dir', async () => {
    const r = await dstack(['run', 'in-dir'], { cwd: repo, home });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.equal('src\ndata in src\n');
  });

  it('runs the python provider with file and requirements, and python: 3.11 with args', async () => {
    const p = await dstack(['run', 'py'], { cwd: repo, home });
    expect(p.code, p.stderr).to.equal(0);
    expect(p.stdout).to.include('python says 3 []');
    const a = await dstack(['run', 'py-args', '-x', '1'], { cwd: repo, home });
    expect(a.code, a.stderr).to.equal(0);
    expect(a.stdout).to.include("python says 3 ['-x', '1']");
  });

  it('fails a run whose command exits 3, and exits 3 itself', async () => {
    const r = await dstack(['run', 'exit3'], { cwd: repo, home });
    expect(r.code).to.equal(3);
    expect(r.stdout).to.equal('before\n');
    expect(r.stderr).to.match(/Run [a-z]+-[a-z]+-\d+ failed: a command exited with code 3/);
  });

  it('refuses at submit, in one line, a Python this machine does not have, and records no run', async () => {
    const before = (await dstack(['ps', '-a', '--json'], { cwd: repo, home })).stdout;
    const r = await dstack(['run', 'no-python'], { cwd: repo, home });
    expect(r.code).to.equal(2);
    expect(r.stdout).to.equal('');
    expect(r.stderr).to.match(/^\.dstack\/workflows\.yaml:33: workflow `no-python` asks for `python: 2\.1`, which no interpreter on this machine provides \(.*\): install Python 2\.1 or conda, or change `python:`\n$/);
    expect((await dstack(['ps', '-a', '--json'], { cwd: repo, home })).stdout).to.equal(before);
  });

  it('shows finished runs in ps -a and replays their output with logs', async () => {
    const ps = await dstack(['ps', '-a'], { cwd: repo, home });
    expect(ps.code).to.equal(0);
    const lines = ps.stdout.trim().split('\n');
    expect(lines[0]).to.match(/^RUN\s+WORKFLOW\s+SUBMITTED\s+STATUS/);
    const hello = lines.find((l) => /\bhello\b/.test(l)) ?? '';
    expect(hello).to.match(/\bDone\b/);
    expect(lines.find((l) => /\bexit3\b/.test(l))).to.match(/\bFailed\b.*exited with code 3/);
    const name = hello.split(/\s+/)[0] ?? '';
    const logs = await dstack(['logs', name], { cwd: repo, home });
    expect(logs.code).to.equal(0);
    expect(logs.stdout).to.include('Hello, world!');
    expect(logs.stderr).to.include('to stderr');
    const json = JSON.parse((await dstack(['ps', name, '--json'], { cwd: repo, home })).stdout) as Array<{ status: string; exitCode: number }>;
    expect(json[0]).to.include({ status: 'done', exitCode: 0 });
    const recent = await dstack(['logs', name, '--since', '1h'], { cwd: repo, home });
    expect(recent.stdout).to.include('Hello, world!');
    const future = await dstack(['logs', name, '--since', '2999-01-01T00:00:00Z'], { cwd: repo, home });
    expect(future.stdout).to.equal('');
  });

  it('prints the resolved job spec with --dry-run and enqueues nothing', async () => {
    const before = (await dstack(['ps', '-a', '--json'], { cwd: repo, home })).stdout;
    const r = await dstack(['run', 'hello', '--dry-run', 'x'], { cwd: repo, home });
    expect(r.code, r.stderr).to.equal(0);
    const spec = JSON.parse(r.stdout) as { workflow: string; commands: string[]; env: Record<string, string>; code: { commit: string } };
    expect(spec.workflow).to.equal('hello');
    expect(spec.commands[1]).to.equal('echo "args=[x]"');
    expect(spec.code.commit).to.match(/^[0-9a-f]{40}$/);
    expect((await dstack(['ps', '-a', '--json'], { cwd: repo, home })).stdout).to.equal(before);
  });

  it('gives unique run names to concurrent submissions', async () => {
    const results = await Promise.all(Array.from({ length: 6 }, () => dstack(['run', '-d', 'in-dir'], { cwd: repo, home })));
    const names = results.map((r) => /Run ([a-z]+-[a-z]+-\d+)/.exec(r.stdout)?.[1]);
    expect(names.every((n) => n !== undefined)).to.equal(true);
    expect(new Set(names).size).to.equal(6);
  });
});

describe('e2e: errors a user sees', function () {
  this.timeout(30_000);
  let home: string;
  before(() => {
    home = makeHome();
  });
  after(() => removeAll(home));

  const oneLine = (stderr: string): string => {
    const lines = stderr.trim().split('\n');
    expect(lines, stderr).to.have.length(1);
    expect(stderr).not.to.match(/\bat .*\.js:\d+/);
    return lines[0] ?? '';
  };

  it('broken YAML: one line with file:line:col, non-zero exit', async () => {
    const repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: a\n    provider: bash\n    commands: [echo\n' });
    const r = await dstack(['run', 'a'], { cwd: repo, home });
    removeAll(repo);
    expect(r.code).to.not.equal(0);
    expect(oneLine(r.stderr)).to.match(/^\.dstack\/workflows\.yaml:\d+:\d+: invalid YAML/);
  });

  it('unknown workflow: one line naming the defined ones', async () => {
    const repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: a\n    provider: bash\n    commands: [x]\n' });
    const r = await dstack(['run', 'nope'], { cwd: repo, home });
    removeAll(repo);
    expect(r.code).to.not.equal(0);
    expect(oneLine(r.stderr)).to.equal('workflow `nope` is not defined in .dstack/workflows.yaml or .dstack/workflows/*.yaml; defined: a');
  });

  it('hosted-era key: one line with file:line and the replacement', async () => {
    const repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: a\n    provider: bash\n    commands: [x]\n    depends-on: [b]\n' });
    const r = await dstack(['run', 'a'], { cwd: repo, home });
    removeAll(repo);
    expect(r.code).to.not.equal(0);
    expect(oneLine(r.stderr)).to.equal('.dstack/workflows.yaml:5:5: workflow `a`: `depends-on` is from the hosted 2022 format: use `deps:` with `- workflow: NAME` or `- tag: NAME`');
  });

  it('outside a git repo: one clear line', async () => {
    const dir = tempDir('nogit');
    const r = await dstack(['run', 'a'], { cwd: dir, home, env: { GIT_CEILING_DIRECTORIES: dir } });
    removeAll(dir);
    expect(r.code).to.not.equal(0);
    expect(oneLine(r.stderr)).to.match(/is not inside a git repository: run dstack from your project's git repo/);
  });

  it('a bad config file: one line with file:line', async () => {
    const bad = tempDir('badhome');
    writeFileSync(join(bad, 'config.yaml'), 'backend: local\nlocal:\n  maxParallelJobs: many\n');
    const repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: a\n    provider: bash\n    commands: [x]\n' });
    const r = await dstack(['ps'], { cwd: repo, home: bad });
    removeAll(repo, bad);
    expect(r.code).to.not.equal(0);
    expect(oneLine(r.stderr)).to.match(/config\.yaml:3:20: `local\.maxParallelJobs`: /);
  });
});

describe('e2e: the job sees exactly the submitter\'s working tree', function () {
  this.timeout(60_000);
  it('matches file by file: committed, modified, staged, deleted, untracked, binary, executable; not ignored', async () => {
    const repo = makeRepo({
      '.dstack/workflows.yaml': `workflows:
  - name: tree
    provider: bash
    commands:
      - find . -path ./.git -prune -o -type f -print | LC_ALL=C sort | while read -r f; do printf '%s %s %s\\n' "$(sha256sum < "$f" | cut -c1-64)" "$(stat -c %a "$f")" "$f"; done
`,
      '.gitignore': 'ignored/\n*.log\n',
      'kept.txt': 'committed\n',
      'changed.txt': 'old\n',
      'deleted.txt': 'bye\n',
      'bin/blob.bin': 'binary-old',
      'tool.sh': '#!/bin/sh\necho tool\n',
    });
    const home = makeHome();
    try {
      chmodSync(join(repo, 'tool.sh'), 0o755);
      execFileSync('git', ['commit', '-qam', 'exec bit'], { cwd: repo });
      writeFileSync(join(repo, 'changed.txt'), 'new content\n');
      rmSync(join(repo, 'deleted.txt'));
      writeFileSync(join(repo, 'staged.txt'), 'staged only\n');
      execFileSync('git', ['add', 'staged.txt'], { cwd: repo });
      writeFileSync(join(repo, 'bin', 'blob.bin'), Buffer.from([0, 1, 2, 255, 254, 0, 10]));
      mkdirSync(join(repo, 'new dir'), { recursive: true });
      writeFileSync(join(repo, 'new dir', 'untracked file.txt'), 'untracked\n');
      mkdirSync(join(repo, 'ignored'));
      writeFileSync(join(repo, 'ignored', 'secret.txt'), 'must not travel\n');
      writeFileSync(join(repo, 'debug.log'), 'ignored too\n');

      const r = await dstack(['run', 'tree'], { cwd: repo, home });
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout.trim().split('\n')).to.deep.equal(localTree(repo));
      expect(r.stdout).not.to.include('secret.txt');
      expect(r.stdout).not.to.include('deleted.txt');
    } finally {
      await killAgents(home);
      removeAll(repo, home);
    }
  });

  it('works in a repo without commits', async () => {
    const repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: a\n    provider: bash\n    commands: [cat note.txt]\n', 'note.txt': 'no commits yet\n' }, { commit: false });
    const home = makeHome();
    try {
      const r = await dstack(['run', 'a'], { cwd: repo, home });
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.equal('no commits yet\n');
    } finally {
      await killAgents(home);
      removeAll(repo, home);
    }
  });
});

/** The same listing the job prints, computed here: what git would give, without ignored files. */
function localTree(repo: string): string[] {
  const ignored = new Set(
    execFileSync('git', ['ls-files', '-z', '--others', '--ignored', '--exclude-standard'], { cwd: repo }).toString().split('\0').filter(Boolean),
  );
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const full = join(dir, name);
      const rel = relative(repo, full);
      if (rel === '.git') continue;
      if (statSync(full).isDirectory()) walk(full);
      else if (!ignored.has(rel)) {
        const hash = createHash('sha256').update(readFileSync(full)).digest('hex');
        out.push(`${hash} ${(statSync(full).mode & 0o777).toString(8)} ./${rel}`);
      }
    }
  };
  walk(repo);
  return out.sort((a, b) => {
    const pa = a.slice(a.indexOf('./'));
    const pb = b.slice(b.indexOf('./'));
    return pa < pb ? -1 : pa > pb ? 1 : 0;
  });
}
