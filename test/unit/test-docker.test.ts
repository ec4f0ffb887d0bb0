import { expect } from 'chai';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeAll, tempDir } from '../support/cli.js';
import { parseEnvLines, requireDocker, type DockerContext } from '../support/docker.js';

class Skipped extends Error {}

function fakeContext(): DockerContext & { test: { title: string; type: string } } {
  return {
    test: { title: 'runs a docker workflow', type: 'test' },
    skip: () => {
      throw new Skipped();
    },
  };
}

/** A folder holding the tools requireDocker looks for, as empty executables. */
function toolsDir(dir: string, names: string[]): string {
  const bin = join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  for (const name of names) {
    writeFileSync(join(bin, name), '#!/bin/sh\n');
    chmodSync(join(bin, name), 0o755);
  }
  return bin;
}

const ALL = ['dockerd', 'docker', 'docker-registry', 'busybox'];
const neverStart = (): Promise<never> => Promise.reject(new Error('must not start'));

describe('test support: requireDocker', () => {
  let dir: string;
  beforeEach(() => (dir = tempDir('docker-support')));
  afterEach(() => removeAll(dir));

  it('skips a test when dockerd is not installed, naming dockerd and how to install it', async () => {
    const lines: string[] = [];
    const ctx = fakeContext();
    const env = { PATH: toolsDir(dir, ['docker', 'docker-registry', 'busybox']) };
    let thrown: unknown;
    await requireDocker(ctx, { env, isRoot: true, start: neverStart, log: (l) => lines.push(l) }).catch((e: unknown) => (thrown = e));
    expect(thrown).to.be.instanceOf(Skipped);
    expect(lines).to.deep.equal(['skipped: needs dockerd (apt-get install docker.io docker-registry busybox-static): no dockerd on PATH']);
    expect(ctx.test.title).to.equal(`runs a docker workflow (${lines[0] ?? ''})`);
  });

  it('skips when dockerd cannot start, with the end of its error', async () => {
    const lines: string[] = [];
    const env = { PATH: toolsDir(dir, ALL) };
    const start = (): Promise<never> => Promise.reject(new Error('ci-docker.sh start exited 1: ci-docker: dockerd exited at start; the end of its log:\nfailed to start daemon: no overlay'));
    let thrown: unknown;
    await requireDocker(fakeContext(), { env, isRoot: true, start, log: (l) => lines.push(l) }).catch((e: unknown) => (thrown = e));
    expect(thrown).to.be.instanceOf(Skipped);
    expect(lines).to.have.length(1);
    expect(lines[0]).to.match(/^skipped: needs dockerd, which could not start: ci-docker\.sh start exited 1: .* \| failed to start daemon: no overlay$/);
  });

  it('skips when not root, without trying to start dockerd', async () => {
    const lines: string[] = [];
    let thrown: unknown;
    await requireDocker(fakeContext(), { env: { PATH: toolsDir(dir, ALL) }, isRoot: false, start: neverStart, log: (l) => lines.push(l) }).catch((e: unknown) => (thrown = e));
    expect(thrown).to.be.instanceOf(Skipped);
    expect(lines[0]).to.match(/^skipped: needs dockerd, which only root can start here/);
  });

  it('fails instead of skipping when CI is set', async () => {
    const lines: string[] = [];
    let thrown: unknown;
    await requireDocker(fakeContext(), { env: { PATH: join(dir, 'empty'), CI: '1' }, isRoot: true, start: neverStart, log: (l) => lines.push(l) }).catch((e: unknown) => (thrown = e));
    expect(thrown).to.be.instanceOf(Error).and.not.instanceOf(Skipped);
    expect((thrown as Error).message).to.match(/^needs dockerd \(apt-get install docker\.io docker-registry busybox-static\): no dockerd on PATH: CI must provide it \(see \.ci\/run\)$/);
    expect(lines).to.deep.equal([]);
  });

  it('uses the daemon .ci/run started (DSTACK_TEST_DOCKER_HOST), without starting one', async () => {
    const env = { PATH: '', DSTACK_TEST_DOCKER_HOST: 'unix:///tmp/x/docker.sock', DSTACK_TEST_REGISTRY: '127.0.0.1:5000', DSTACK_TEST_DOCKER_IMAGE: '127.0.0.1:5000/busybox:latest' };
    const d = await requireDocker(fakeContext(), { env, start: neverStart });
    expect([d.host, d.registry, d.image, d.debianImage]).to.deep.equal(['unix:///tmp/x/docker.sock', '127.0.0.1:5000', '127.0.0.1:5000/busybox:latest', undefined]);
    expect(d.env()).to.deep.equal({ DOCKER_HOST: 'unix:///tmp/x/docker.sock' });
    expect(d.ref('moving:latest')).to.equal('127.0.0.1:5000/moving:latest');
  });

  it('refuses DSTACK_TEST_DOCKER_HOST without the registry and image', async () => {
    let thrown: unknown;
    await requireDocker(fakeContext(), { env: { DSTACK_TEST_DOCKER_HOST: 'unix:///tmp/x/docker.sock' }, start: neverStart }).catch((e: unknown) => (thrown = e));
    expect((thrown as Error).message).to.match(/^DSTACK_TEST_DOCKER_HOST is set without DSTACK_TEST_REGISTRY and DSTACK_TEST_DOCKER_IMAGE/);
  });

  it('reads the KEY=VALUE lines ci-docker.sh prints', () => {
    expect(parseEnvLines('DOCKER_HOST=unix:///tmp/d/docker.sock\nDSTACK_TEST_REGISTRY=127.0.0.1:5000\nnoise\n')).to.deep.equal({
      DOCKER_HOST: 'unix:///tmp/d/docker.sock',
      DSTACK_TEST_REGISTRY: '127.0.0.1:5000',
    });
  });
});
