import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, removeAll, tempDir } from '../support/cli.js';

interface ImageRow {
  image: string;
  cuda: string;
  python: string;
}

/** ami/images.txt: one image a line, with its CUDA and Python versions. */
function imagesTxt(): ImageRow[] {
  return readFileSync(join(ROOT, 'ami', 'images.txt'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('#'))
    .map((l) => {
      const [image = '', cuda = '', python = '', ...rest] = l.trim().split(/\s+/);
      expect(rest, l).to.deep.equal([]);
      return { image, cuda, python };
    });
}

/** The rows of the markdown table headed `| Image | CUDA | Python |`, or undefined when the file has none. */
function readmeTable(file: string): ImageRow[] | undefined {
  const lines = readFileSync(file, 'utf8').split('\n');
  const head = lines.findIndex((l) => /^\|\s*Image\s*\|\s*CUDA\s*\|\s*Python\s*\|$/.test(l.trim()));
  if (head < 0) return undefined;
  const rows: ImageRow[] = [];
  for (const line of lines.slice(head + 2)) {
    if (!line.startsWith('|')) break;
    const [image = '', cuda = '', python = ''] = line.split('|').slice(1, -1).map((c) => c.trim());
    rows.push({ image: image.replace(/^`|`$/g, ''), cuda, python });
  }
  return rows;
}

describe('ami: the pre-pulled docker images', () => {
  let dir: string;
  beforeEach(() => (dir = tempDir('ami-images')));
  afterEach(() => removeAll(dir));

  it('images.txt names each image with a CUDA and a Python version ("-": none)', () => {
    const rows = imagesTxt();
    expect(rows.length).to.be.greaterThan(0);
    for (const r of rows) {
      expect(r.image).to.match(/^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9._-]+$/);
      expect(r.cuda, r.image).to.match(/^(\d+\.\d+|-)$/);
      expect(r.python, r.image).to.match(/^(3\.\d+|-)$/);
    }
  });

  it('the READMEs\' tables list exactly the rows of images.txt (ami/README.md must have one)', () => {
    expect(readmeTable(join(ROOT, 'ami', 'README.md'))).to.deep.equal(imagesTxt());
    const top = readmeTable(join(ROOT, 'README.md'));
    if (top !== undefined) expect(top).to.deep.equal(imagesTxt());
  });

  // pull-images.sh with a `docker` of the test's own, first on PATH: it records its calls.
  const fakeDocker = (o: { daemon: boolean }): string => {
    const bin = join(dir, 'bin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(
      join(bin, 'docker'),
      `#!/bin/sh
echo "$*" >> '${join(dir, 'calls')}'
case "$1" in
  info) ${o.daemon ? 'exit 0' : 'echo "Cannot connect to the Docker daemon" >&2; exit 1'} ;;
  pull) exit 0 ;;
  image) eval "last=\\\${$#}"; echo "\${last%%:*}@sha256:0123"; exit 0 ;;
  *) exit 2 ;;
esac
`,
    );
    chmodSync(join(bin, 'docker'), 0o755);
    return bin;
  };
  const pull = (bin: string, env: Record<string, string> = {}): { code: number | null; out: string; calls: string[] } => {
    const r = spawnSync('bash', [join(ROOT, 'ami', 'pull-images.sh')], { env: { PATH: `${bin}:/usr/bin:/bin`, ...env }, encoding: 'utf8' });
    const calls = existsSync(join(dir, 'calls')) ? readFileSync(join(dir, 'calls'), 'utf8').trim().split('\n') : [];
    return { code: r.status, out: r.stdout + r.stderr, calls };
  };

  it('pull-images.sh pulls exactly the images of images.txt, in order, and logs each one\'s digest', () => {
    const r = pull(fakeDocker({ daemon: true }));
    expect(r.code, r.out).to.equal(0);
    const images = imagesTxt().map((i) => i.image);
    expect(r.calls.filter((c) => c.startsWith('pull '))).to.deep.equal(images.map((i) => `pull -q ${i}`));
    for (const image of images) expect(r.out).to.include(`[dstack-ami] docker images: ${image} is ${image.split(':')[0] ?? ''}@sha256:0123\n`);
    expect(r.out).to.include(`[dstack-ami] docker images: ${images.length} pulled\n`);
  });

  it('offline, with no image tarballs, it pulls nothing and says so in one SKIPPED line', () => {
    const offline = join(dir, 'offline');
    mkdirSync(offline);
    const r = pull(fakeDocker({ daemon: true }), { DSTACK_AMI_OFFLINE_DIR: offline });
    expect(r.code, r.out).to.equal(0);
    expect(r.calls.filter((c) => c.startsWith('pull'))).to.deep.equal([]);
    expect(r.out).to.match(/^\[dstack-ami\] SKIPPED the docker images \(nvidia\/cuda:[^)]*\): offline: pulling needs the registries/m);
  });

  it('online, a dockerd that does not answer fails the build with one line', () => {
    const r = pull(fakeDocker({ daemon: false }));
    expect(r.code).to.equal(1);
    expect(r.out).to.equal('[dstack-ami] ERROR: docker images: dockerd does not answer (systemctl status docker)\n');
  });

  it('the Packer template runs it, after provision.sh', () => {
    const hcl = readFileSync(join(ROOT, 'ami', 'dstack-agent.pkr.hcl'), 'utf8');
    const provision = hcl.indexOf('/provision.sh');
    const images = hcl.indexOf('"sudo bash ${local.remote_dir}/pull-images.sh"');
    expect(provision).to.be.greaterThan(0);
    expect(images).to.be.greaterThan(provision);
  });
});
