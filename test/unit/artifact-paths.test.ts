import { expect } from 'chai';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ArtifactError, blobKey, encodeManifest, manifestKey, sha256, type Manifest } from '../../common/artifacts/manifest.js';
import { artifactTarget, restoreTree } from '../../common/artifacts/restore.js';
import { saveTree } from '../../common/artifacts/save.js';
import type { CodeRef } from '../../common/code-ref.js';
import { UsageError, formatProblem, type SpecProblem } from '../../common/errors.js';
import { buildJobSpec } from '../../common/spec/job-spec.js';
import { parseWorkflowsText } from '../../common/spec/load.js';
import { applyOverrides } from '../../coordinator/overrides.js';
import { removeAll, tempDir } from '../support/cli.js';
import { withTempStore } from '../support/temp-store.js';

const CODE: CodeRef = { commit: 'abc', branch: 'main', remoteUrl: null, archiveKey: null, diffKey: null, diffSha256: null, untrackedKey: null, untrackedSha256: null };

function parse(text: string): { problems: string[]; paths: string[][] } {
  const problems: SpecProblem[] = [];
  const located = parseWorkflowsText(text, '.dstack/workflows.yaml', problems);
  const paths = located.map((l) => buildJobSpec({ located: l, repoId: 'r', runName: 'a-b-1', jobId: 'j', args: [], shellEnv: {}, code: CODE, now: new Date(0) }).artifacts.map((a) => a.path));
  return { problems: problems.map(formatProblem), paths };
}

describe('artifact paths: nothing escapes its folder', () => {
  it('a relative artifact path that climbs out of the working dir is refused at parse time, at its file:line:col', () => {
    const { problems } = parse(`workflows:
  - name: evil
    provider: bash
    commands: [echo hi]
    artifacts:
      - path: ../../../../../../../../../../tmp/x
      - sub/../../up
      - ./ok
`);
    const rule = 'climbs out of the working dir: use a path inside it (no `..` leading out), or an absolute path';
    expect(problems).to.deep.equal([
      `.dstack/workflows.yaml:6:15: workflow \`evil\`: \`artifacts.0.path\`: artifact \`../../../../../../../../../../tmp/x\` ${rule}`,
      `.dstack/workflows.yaml:7:9: workflow \`evil\`: \`artifacts.1\`: artifact \`sub/../../up\` ${rule}`,
    ]);
  });

  it('paths that stay inside, and absolute paths, are kept (folded to their plain form)', () => {
    const { problems, paths } = parse(`workflows:
  - name: fine
    provider: bash
    commands: [echo hi]
    artifacts: [./output/, a/../b, /opt/conda/envs/myenv, .]
`);
    expect(problems).to.deep.equal([]);
    expect(paths).to.deep.equal([['output', 'b', '/opt/conda/envs/myenv', '.']]);
  });

  it('the -a run override is checked the same way', () => {
    const { problems } = parse('workflows:\n  - name: w\n    provider: bash\n    commands: [echo hi]\n');
    expect(problems).to.deep.equal([]);
    const located = parseWorkflowsText('workflows:\n  - name: w\n    provider: bash\n    commands: [echo hi]\n', 'w.yaml', []);
    const spec = buildJobSpec({ located: located[0]!, repoId: 'r', runName: 'a-b-1', jobId: 'j', args: [], shellEnv: {}, code: CODE, now: new Date(0) });
    const err = (() => {
      try {
        applyOverrides(spec, { env: [], deps: [], artifacts: ['../../tmp/x'] }, {});
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).to.be.instanceOf(UsageError);
    expect((err as Error).message).to.equal('-a ../../tmp/x: the artifact path climbs out of the working dir: use a path inside it (no `..` leading out), or an absolute path');
    expect(applyOverrides(spec, { env: [], deps: [], artifacts: ['./out/'] }, {}).artifacts).to.deep.equal([{ path: 'out', mount: false }]);
  });

  describe('paths from the store are hostile', () => {
    let dir: string;
    beforeEach(() => (dir = tempDir('paths')));
    afterEach(() => removeAll(dir));

    it('an artifact path with `..` from a run index is refused on download and on restore, before anything is made', async () => {
      const base = join(dir, 'a', 'b', 'out');
      for (const [path, absolute] of [
        ['../../../escaped', 'under-base'],
        ['../escaped', 'at-path'],
        ['/opt/../../escaped', 'under-base'],
        ['/tmp/../escaped', 'at-path'],
      ] as const) {
        const err = await artifactTarget(base, path, absolute).catch((e: unknown) => e);
        expect(err, path).to.be.instanceOf(ArtifactError);
        expect((err as Error).message).to.equal(`refusing artifact path \`${path}\`: it climbs out of its folder (..)`);
      }
      expect(readdirSync(dir)).to.deep.equal([]);
    });

    it('an absolute path goes under the base on download, and stays at its path on the agent', async () => {
      const base = join(dir, 'out');
      expect(await artifactTarget(base, '/opt/env', 'under-base')).to.equal(join(base, 'opt', 'env'));
      expect(await artifactTarget(base, join(dir, 'abs', 'env'), 'at-path')).to.equal(join(dir, 'abs', 'env'));
    });

    it('a relative target behind an existing symlink that leads out of the base is refused', async () => {
      const base = join(dir, 'out');
      mkdirSync(join(dir, 'elsewhere'));
      mkdirSync(base);
      symlinkSync(join(dir, 'elsewhere'), join(base, 'output'));
      const err = await artifactTarget(base, 'output/sub', 'under-base').catch((e: unknown) => e);
      expect(err).to.be.instanceOf(ArtifactError);
      expect(readdirSync(join(dir, 'elsewhere'))).to.deep.equal([]);
    });
  });

  describe('symlinks are saved as links, never read through', () => {
    const t = withTempStore('links', 'store');

    const storedBytes = (): Buffer => {
      const all: Buffer[] = [];
      const walk = (d: string): void => {
        for (const n of readdirSync(d)) {
          const p = join(d, n);
          if (lstatSync(p).isDirectory()) walk(p);
          else all.push(readFileSync(p));
        }
      };
      walk(join(t.dir, 'store'));
      return Buffer.concat(all);
    };

    for (const kind of ['file', 'dir'] as const) {
      it(`an artifact path that is a symlink to a secret ${kind} outside is saved as the link; the secret never reaches the store`, async () => {
        const secret = `top secret ${kind} ${Math.random()}`;
        const outside = join(t.dir, 'outside');
        mkdirSync(outside);
        writeFileSync(join(outside, 'secret.txt'), secret);
        const repo = join(t.dir, 'repo');
        mkdirSync(repo);
        symlinkSync(kind === 'file' ? join(outside, 'secret.txt') : outside, join(repo, 'artifact'));
        const saved = await saveTree(t.store, join(repo, 'artifact'));
        expect(saved).to.include({ files: 0, sizeBytes: 0 });
        expect(storedBytes().includes(secret)).to.equal(false);
        const restored = join(t.dir, 'restored', 'artifact');
        await restoreTree(t.store, saved.manifestSha, restored);
        expect(lstatSync(restored).isSymbolicLink()).to.equal(true);
        expect(readlinkSync(restored)).to.equal(kind === 'file' ? join(outside, 'secret.txt') : outside);
      });
    }

    it('a link inside an artifact is restored as a link whatever its target (a venv names its interpreter), and nothing is written through it', async () => {
      const src = join(t.dir, 'env');
      mkdirSync(join(src, 'bin'), { recursive: true });
      symlinkSync('/usr/bin/python3', join(src, 'bin', 'python3'));
      symlinkSync('python3', join(src, 'bin', 'python'));
      symlinkSync('../../../outside', join(src, 'up'));
      const saved = await saveTree(t.store, src);
      const out = join(t.dir, 'a', 'b', 'env');
      await restoreTree(t.store, saved.manifestSha, out);
      expect(readlinkSync(join(out, 'bin', 'python3'))).to.equal('/usr/bin/python3');
      expect(readlinkSync(join(out, 'bin', 'python'))).to.equal('python3');
      expect(readlinkSync(join(out, 'up'))).to.equal('../../../outside');
    });

    it('a crafted manifest with an entry below a symlink entry is refused, writing nothing', async () => {
      await t.store.put(blobKey(sha256('x')), 'x');
      const m: Manifest = {
        version: 1,
        entries: [
          { path: 'link', type: 'symlink', mode: 0o777, sizeBytes: 0, target: '/tmp' },
          { path: 'link/escaped.txt', type: 'file', mode: 0o644, sizeBytes: 1, chunks: [sha256('x')], sha256: sha256('x') },
        ],
        files: 1,
        sizeBytes: 1,
      };
      const body = encodeManifest(m);
      await t.store.put(manifestKey(sha256(body)), body);
      const err = await restoreTree(t.store, sha256(body), join(t.dir, 'target')).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(ArtifactError);
      expect((err as Error).message).to.equal('refusing to restore `link/escaped.txt`: it would be written through the symlink `link`');
      expect(existsSync(join(t.dir, 'target'))).to.equal(false);
    });
  });
});
