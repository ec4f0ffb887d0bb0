import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { encodeManifest, sha256 } from '../../common/artifacts/manifest.js';
import { dstack, killAgents, makeHome, makeRepo, removeAll, tempDir, waitFor } from '../support/cli.js';

const workflows = (absDir: string): string => `workflows:
  - name: produce
    provider: bash
    commands:
      - mkdir -p output/nested
      - echo "value=\${{ run.args }}" > output/hello.txt
      - head -c 300000 /dev/urandom > output/nested/blob.bin
      - chmod 750 output/hello.txt
    artifacts:
      - path: ./output
  - name: consume
    provider: bash
    deps:
      - workflow: produce
    commands:
      - cat output/hello.txt
      - sha256sum output/nested/blob.bin | cut -c1-64
  - name: consume-tag
    provider: bash
    deps:
      - tag: golden
    commands:
      - cat output/hello.txt
  - name: absolute
    provider: bash
    commands:
      - mkdir -p ${absDir}
      - echo "env files" > ${absDir}/env.txt
    artifacts:
      - path: ${absDir}
  - name: use-absolute
    provider: bash
    deps:
      - workflow: absolute
    commands:
      - cat ${absDir}/env.txt
  - name: missing-dep
    provider: bash
    deps:
      - workflow: never-ran
    commands: [echo hi]
  - name: mounted
    provider: bash
    commands:
      - mkdir -p progress
      - for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do echo $i > progress/step-$i.txt; sleep 0.3; done
    artifacts:
      - path: progress
        mount: true
  - name: expensive
    provider: bash
    cache: true
    commands:
      - echo "computing for real"
      - mkdir -p out && echo result > out/r.txt
    artifacts: [out]
`;

interface RunJson {
  runName: string;
  status: string;
  reason: string | null;
  cacheOf: string | null;
  restartOf: string | null;
  toolVersion: string;
  code: { commit: string | null };
  pinnedDeps: Array<{ runName: string; artifacts: Array<{ path: string; manifestSha: string }> }>;
  overrides: string[];
  artifacts: Array<{ path: string; files: number }>;
  attempts: Array<{ hostFacts?: { hostname: string; cpus: number } }>;
}

const nameOf = (text: string): string => /Run ([a-z]+-[a-z]+-\d+)/.exec(text)?.[1] ?? '';

function treeHashes(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else out[relative(dir, p)] = `${createHash('sha256').update(readFileSync(p)).digest('hex')} ${(statSync(p).mode & 0o777).toString(8)}`;
    }
  };
  walk(dir);
  return out;
}

describe('e2e: artifacts, deps, tags, restart and the rerun cache', function () {
  this.timeout(90_000);
  let repo: string;
  let home: string;
  let absDir: string;
  const run = (args: string[], env: Record<string, string> = {}) => dstack(args, { cwd: repo, home, env });
  const ps = async (name: string): Promise<RunJson> => (JSON.parse((await run(['ps', name, '--json'])).stdout) as RunJson[])[0]!;
  before(() => {
    absDir = join(tempDir('abs'), 'env');
    repo = makeRepo({ '.dstack/workflows.yaml': workflows(absDir) });
    home = makeHome({ artifactSyncSec: 1, stopGraceSec: 1 });
  });
  after(async () => {
    await killAgents(home);
    removeAll(repo, home, join(absDir, '..'));
  });

  it('a missing dep is a clear error at submit time, and nothing is enqueued', async () => {
    const r = await run(['run', 'missing-dep']);
    expect(r.code).to.equal(1);
    expect(r.stderr.trim()).to.equal('dep `workflow: never-ran`: no successful run of `never-ran` yet: run it first with `dstack run never-ran`');
    expect(JSON.parse((await run(['ps', '-a', '--json'])).stdout)).to.deep.equal([]);
  });

  let first = '';
  it('a second workflow reads the first one\'s output through `deps: - workflow`', async () => {
    const p = await run(['run', 'produce', 'one']);
    expect(p.code, p.stderr).to.equal(0);
    first = nameOf(p.stderr);
    const c = await run(['run', 'consume']);
    expect(c.code, c.stderr).to.equal(0);
    expect(c.stdout.split('\n')[0]).to.equal('value=one');
    expect(c.stderr).to.include(`restored output (2 files) from workflow produce (run ${first})`);
  });

  it('artifacts list shows paths, file counts and sizes; download reproduces the files byte for byte', async () => {
    const list = await run(['artifacts', 'list', first]);
    expect(list.stdout).to.match(/^ARTIFACT\s+FILES\s+SIZE\noutput\s+2\s+29\d\.\d KB\n$/);
    const out = tempDir('download');
    try {
      const d = await run(['artifacts', 'download', first, '-o', out]);
      expect(d.code, d.stderr).to.equal(0);
      const consumed = await run(['run', 'consume']);
      const downloaded = treeHashes(join(out, 'output'));
      expect(Object.keys(downloaded).sort()).to.deep.equal(['hello.txt', 'nested/blob.bin']);
      expect(downloaded['hello.txt']).to.equal(`${sha256('value=one\n')} 750`);
      expect(downloaded['nested/blob.bin']?.slice(0, 64)).to.equal(consumed.stdout.split('\n')[1]);
    } finally {
      removeAll(out);
    }
  });

  it('the same works through a tag (run -t), and tags list/delete manage it', async () => {
    const tagged = await run(['run', 'produce', '-t', 'golden', 'tagged']);
    expect(tagged.code, tagged.stderr).to.equal(0);
    const c = await run(['run', 'consume-tag']);
    expect(c.stdout).to.equal('value=tagged\n');
    const list = await run(['tags', 'list']);
    expect(list.stdout).to.match(new RegExp(`^golden\\s+${nameOf(tagged.stderr)}\\s+produce\\s+output\\s`, 'm'));
    const listed = await run(['artifacts', 'list', ':golden']);
    expect(listed.stdout).to.include('output');
  });

  it('restart reproduces a run with deps, even after the dep workflow ran again with other output', async () => {
    const c = await run(['run', 'consume']);
    const original = nameOf(c.stderr);
    expect(c.stdout.split('\n')[0]).to.equal('value=tagged');
    await run(['run', 'produce', 'changed']);
    expect((await run(['run', 'consume'])).stdout.split('\n')[0]).to.equal('value=changed');
    const r = await run(['restart', original]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.equal(c.stdout);
    const again = await ps(nameOf(r.stderr.split('\n').find((l) => l.startsWith('Run ')) ?? ''));
    expect(again.restartOf).to.equal(original);
    expect(again.pinnedDeps).to.deep.equal((await ps(original)).pinnedDeps);
  });

  it('ps RUN --json shows the record: code, pinned deps, overrides, version, host, artifacts', async () => {
    const r = await run(['run', 'consume', '-e', 'EXTRA=1', '--cpu', '2']);
    const view = await ps(nameOf(r.stderr));
    expect(view.code.commit).to.match(/^[0-9a-f]{40}$/);
    expect(view.pinnedDeps[0]?.artifacts[0]?.manifestSha).to.match(/^[0-9a-f]{64}$/);
    expect(view.overrides).to.deep.equal(['-e', 'EXTRA=1', '--cpu', '2']);
    expect(view.toolVersion).to.match(/^\d+\.\d+\.\d+/);
    expect(view.attempts[0]?.hostFacts?.cpus).to.be.a('number');
  });

  it('tags add -a uploads local folders as a finished run that deps can use', async () => {
    mkdirSync(join(repo, 'output'), { recursive: true });
    writeFileSync(join(repo, 'output', 'hello.txt'), 'value=uploaded\n');
    const add = await run(['tags', 'add', 'uploaded', '-a', 'output']);
    expect(add.code, add.stderr).to.equal(0);
    const dup = await run(['tags', 'add', 'uploaded', '-a', 'output']);
    expect(dup.stderr.trim()).to.equal('tag `uploaded` already exists: delete it first with `dstack tags delete uploaded`');
    const c = await run(['run', 'consume', '--dep', ':uploaded', '--dry-run']);
    const spec = JSON.parse(c.stdout) as { pinnedDeps: Array<{ kind: string; name: string }> };
    expect(spec.pinnedDeps.map((d) => `${d.kind}:${d.name}`)).to.deep.equal(['workflow:produce', 'tag:uploaded']);
    const del = await run(['tags', 'delete', 'uploaded', '-y']);
    expect(del.stdout).to.equal('Deleted tag uploaded.\n');
    expect((await run(['tags', 'list'])).stdout).not.to.include('uploaded');
  });

  it('an absolute-path artifact goes back only to its declared path', async () => {
    const a = await run(['run', 'absolute']);
    expect(a.code, a.stderr).to.equal(0);
    removeAll(absDir);
    const u = await run(['run', 'use-absolute']);
    expect(u.stdout).to.equal('env files\n');
    const out = tempDir('absdl');
    try {
      await run(['artifacts', 'download', nameOf(a.stderr), '-o', out]);
      expect(readFileSync(join(out, absDir.slice(1), 'env.txt'), 'utf8')).to.equal('env files\n');
    } finally {
      removeAll(out);
    }
  });

  it('mount: true saves while the job runs, and a killed job keeps what was saved', async () => {
    const sub = await run(['run', '-d', 'mounted']);
    const name = /Run ([a-z]+-[a-z]+-\d+)/.exec(sub.stdout)?.[1] ?? '';
    const saved = await waitFor(
      async () => {
        const view = await ps(name);
        return (view.artifacts[0]?.files ?? 0) >= 3 ? view.artifacts[0]?.files : undefined;
      },
      15_000,
      'an incremental save',
    );
    expect(saved).to.be.at.least(3);
    expect((await ps(name)).status).to.equal('running');
    await run(['stop', '-x', name, '-y']);
    const view = await ps(name);
    expect(view.status).to.equal('stopped');
    expect(view.artifacts[0]?.files).to.be.at.least(saved ?? 0);
  });

  it('a cached rerun finishes without running the commands and says it was a cache hit; --no-cache runs', async () => {
    const first = await run(['run', 'expensive']);
    expect(first.stdout).to.equal('computing for real\n');
    const hit = await run(['run', 'expensive']);
    expect(hit.code).to.equal(0);
    expect(hit.stdout).to.equal(`Run ${nameOf(hit.stdout)} (workflow expensive): cache hit, reused the outputs of run ${nameOf(first.stderr)}; no commands were run.\n`);
    const view = await ps(nameOf(hit.stdout));
    expect(view.cacheOf).to.equal(nameOf(first.stderr));
    expect(view.attempts).to.deep.equal([]);
    expect(view.artifacts.map((a) => a.path)).to.deep.equal(['out']);
    const forced = await run(['run', 'expensive', '--no-cache']);
    expect(forced.stdout).to.equal('computing for real\n');
    const changedArgs = await run(['run', 'expensive', '-e', 'X=1']);
    expect(changedArgs.stdout).to.equal('computing for real\n');
  });

  it('a crafted artifact with ../ in the store is refused on download, and nothing is written outside', async () => {
    const target = nameOf((await run(['run', 'produce', 'x'])).stderr);
    const storeDir = join(home, 'local', 'store', 'objects');
    const evil = encodeManifest({ version: 1, entries: [{ path: '../../escaped.txt', type: 'file', mode: 0o644, sizeBytes: 4, chunks: [sha256('evil')], sha256: sha256('evil') }], files: 1, sizeBytes: 4 });
    mkdirSync(join(storeDir, 'manifests'), { recursive: true });
    writeFileSync(join(storeDir, 'manifests', `${sha256(evil)}.json`), evil);
    const indexFile = readdirSync(join(storeDir, 'repos'), { recursive: true }).map(String).find((p) => p.endsWith(`${target}/artifacts.json`)) ?? '';
    writeFileSync(join(storeDir, 'repos', indexFile), JSON.stringify({ artifacts: [{ path: 'output', manifestSha: sha256(evil), files: 1, sizeBytes: 4 }], savedAt: '', complete: true }));
    const out = join(tempDir('evil'), 'a', 'b');
    const d = await run(['artifacts', 'download', target, '-o', out]);
    expect(d.code).to.equal(1);
    expect(d.stderr).to.include('refusing to restore `../../escaped.txt`');
    expect(existsSync(join(out, '..', 'escaped.txt'))).to.equal(false);
    expect(existsSync(join(out, 'escaped.txt'))).to.equal(false);
    removeAll(join(out, '..', '..'));
  });
});
