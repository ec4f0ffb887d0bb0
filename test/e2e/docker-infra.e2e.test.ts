import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../support/cli.js';
import { alive } from '../support/process.js';
import { CI_DOCKER, parseEnvLines, requireDocker, type DockerEnv } from '../support/docker.js';

/** Pids whose command line names `dir`. */
function processesNaming(dir: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(`${dir}/`)) pids.push(Number(name));
    } catch {
      // Gone.
    }
  }
  return pids;
}

describe('docker test infrastructure (scripts/ci-docker.sh, test/support/docker.ts)', function () {
  this.timeout(120_000);
  let d: DockerEnv;
  before(async function () {
    d = await requireDocker(this);
  });

  it('pulls the test image from the local registry with the digest it was pushed with', async () => {
    const pushed = await d.digest(d.image);
    expect(pushed).to.match(/^sha256:[0-9a-f]{64}$/);
    await d.docker(['image', 'rm', d.image]);
    const out = await d.docker(['pull', d.image]);
    expect(out).to.include(`Digest: ${pushed}`);
    expect(await d.digest(d.image)).to.equal(pushed);
    expect(await d.docker(['run', '--rm', d.image, 'sh', '-c', 'echo hi from $0'])).to.equal('hi from sh\n');
  });

  it('push moves a tag to another image, whose digest differs', async () => {
    const tag = `moving-${process.pid}:latest`;
    const a = await d.push(tag, 'a');
    const b = await d.push(tag, 'b');
    expect(a).to.match(/^sha256:/);
    expect(b).to.not.equal(a);
    await d.docker(['image', 'rm', d.ref(tag)]);
    await d.docker(['pull', d.ref(tag)]);
    expect(await d.docker(['run', '--rm', d.ref(tag), 'cat', '/variant'])).to.equal('b');
    // The old image is still in the registry by its digest: what a restart pinned to it pulls.
    await d.docker(['pull', `${d.ref(tag).replace(/:latest$/, '')}@${a}`]);
    expect(await d.docker(['run', '--rm', `${d.ref(tag).replace(/:latest$/, '')}@${a}`, 'cat', '/variant'])).to.equal('a');
  });

  it('lists containers by label', async () => {
    const label = `dstack.test=${process.pid}-${Date.now()}`;
    await d.docker(['create', '--name', `dstack-infra-${process.pid}`, '--label', label, d.image, 'true']);
    try {
      expect(await d.containers(label)).to.deep.equal([`dstack-infra-${process.pid}`]);
    } finally {
      await d.docker(['rm', '-f', `dstack-infra-${process.pid}`]);
    }
    expect(await d.containers(label)).to.deep.equal([]);
  });

  it('publishes a container port on 127.0.0.1, reachable from the host', async () => {
    const name = `dstack-infra-web-${process.pid}`;
    // Port 0 on the host: docker picks a free one.
    await d.docker(['run', '-d', '--name', name, '-p', '127.0.0.1::8080', d.image, 'sh', '-c', 'echo served > /tmp/i; exec httpd -f -p 8080 -h /tmp']);
    try {
      const port = (await d.docker(['port', name, '8080'])).trim().split(':').pop();
      let body = '';
      for (let i = 0; i < 50 && body === ''; i++) {
        body = await fetch(`http://127.0.0.1:${port}/i`).then((r) => r.text(), () => '');
        if (body === '') await new Promise((r) => setTimeout(r, 100));
      }
      expect(body).to.equal('served\n');
    } finally {
      await d.docker(['rm', '-f', name]);
    }
  });

  it('ci-docker.sh start reports a dockerd that fails with the end of its log, and leaves nothing behind', function () {
    if (process.getuid?.() !== 0) this.skip();
    const dir = mkdtempSync('/tmp/dsd-');
    const bin = mkdtempSync('/tmp/dsd-bin-');
    try {
      writeFileSync(join(bin, 'dockerd'), '#!/bin/sh\necho "level=info msg=starting"\necho "failed to start daemon: no storage driver" >&2\nexit 1\n');
      chmodSync(join(bin, 'dockerd'), 0o755);
      const start = spawnSync('bash', [CI_DOCKER, 'start', dir], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` } });
      expect(start.status).to.equal(1);
      expect(start.stdout).to.equal('');
      expect(start.stderr).to.match(/^ci-docker: dockerd exited at start; the end of its log:\nlevel=info msg=starting\nfailed to start daemon: no storage driver\n/);
      expect(existsSync(dir)).to.equal(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(bin, { recursive: true, force: true });
    }
  });

  it('ci-docker.sh stop ends its daemon, registry and containers, and removes its folder', async function () {
    if (process.getuid?.() !== 0) this.skip();
    const dir = mkdtempSync('/tmp/dsd-');
    try {
      const start = spawnSync('bash', [CI_DOCKER, 'start', dir], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, DSTACK_CI_DOCKER_DEBIAN: '0' } });
      expect(start.status, start.stderr).to.equal(0);
      const vars = parseEnvLines(start.stdout);
      const env = { ...process.env, DOCKER_HOST: vars.DOCKER_HOST ?? '' };
      const run = spawnSync('docker', ['run', '-d', vars.DSTACK_TEST_DOCKER_IMAGE ?? '', 'sleep', '1000'], { env, encoding: 'utf8' });
      expect(run.status, run.stderr).to.equal(0);
      const containerPid = Number(spawnSync('docker', ['inspect', '-f', '{{.State.Pid}}', run.stdout.trim()], { env, encoding: 'utf8' }).stdout.trim());
      expect(alive(containerPid)).to.equal(true);
      expect(processesNaming(dir)).to.not.deep.equal([]);
      const stop = spawnSync('bash', [CI_DOCKER, 'stop', dir], { encoding: 'utf8', timeout: 120_000 });
      expect(stop.status, stop.stderr).to.equal(0);
      expect(processesNaming(dir)).to.deep.equal([]);
      expect(alive(containerPid)).to.equal(false);
      expect(existsSync(dir)).to.equal(false);
      expect(readFileSync('/proc/self/mountinfo', 'utf8')).to.not.include(dir);
    } finally {
      spawnSync('bash', [CI_DOCKER, 'stop', dir], { stdio: 'ignore', timeout: 120_000 });
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('ci-docker.sh stops everything by itself once its owner process is gone (a test run killed with -9)', async function () {
    if (process.getuid?.() !== 0) this.skip();
    const dir = mkdtempSync('/tmp/dsd-');
    const owner = spawn('sleep', ['600'], { stdio: 'ignore' });
    try {
      const start = spawnSync('bash', [CI_DOCKER, 'start', dir], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, DSTACK_CI_DOCKER_DEBIAN: '0', DSTACK_CI_DOCKER_OWNER: String(owner.pid) } });
      expect(start.status, start.stderr).to.equal(0);
      const vars = parseEnvLines(start.stdout);
      const run = spawnSync('docker', ['run', '-d', vars.DSTACK_TEST_DOCKER_IMAGE ?? '', 'sleep', '1000'], { env: { ...process.env, DOCKER_HOST: vars.DOCKER_HOST ?? '' }, encoding: 'utf8' });
      expect(run.status, run.stderr).to.equal(0);
      const dockerd = Number(readFileSync(join(dir, 'docker.pid'), 'utf8'));
      owner.kill('SIGKILL');
      await waitFor(() => (existsSync(dir) ? undefined : true), 60_000, `${dir} to be removed`);
      expect(alive(dockerd)).to.equal(false);
      expect(processesNaming(dir)).to.deep.equal([]);
    } finally {
      owner.kill('SIGKILL');
      spawnSync('bash', [CI_DOCKER, 'stop', dir], { stdio: 'ignore', timeout: 120_000 });
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
