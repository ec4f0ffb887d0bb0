import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { AGENT, ROOT, dstack, filesHolding, killAgents, makeHome, makeRepo, removeAll, spawnCli, tempDir, waitFor } from '../support/cli.js';
import { requireDocker, type DockerEnv } from '../support/docker.js';
import { freePort } from '../../agent/providers.js';

interface PsView {
  runName: string;
  status: string;
  reason?: string | null;
  attempts: Array<{ attempt: number; agentId: string; image?: { ref: string; digest: string; pinned: string } }>;
}

function workflows(image: string, moving: string, registry: string): string {
  return `workflows:
  - name: greet
    provider: docker
    image: ${image}
    entrypoint: /bin/sh -xc
    env:
      - GREETING=hello
    commands:
      - echo "$GREETING \${{ run.args }} in $(pwd)"
      - mkdir -p out && echo "$GREETING" > out/greeting.txt && head -c 100000 /dev/urandom > out/random.bin
    artifacts:
      - out
  - name: reader
    provider: bash
    deps:
      - workflow: greet
    commands:
      - cat out/greeting.txt
      - sha256sum out/random.bin
  - name: web
    provider: docker
    image: ${image}
    ports: 1
    commands:
      - echo served-from-docker > index.html
      - echo "listening on $PORT_0"
      - httpd -f -p $PORT_0 -h .
  - name: slow
    provider: docker
    image: ${image}
    commands:
      - echo started
      - sleep 4
      - echo finished
  - name: trapper
    provider: docker
    image: ${image}
    commands:
      - trap 'echo got TERM; exit 3' TERM
      - echo started
      - while true; do sleep 0.2; done
  - name: stubborn
    provider: docker
    image: ${image}
    commands:
      - trap 'echo ignoring TERM' TERM
      - echo started
      - while true; do sleep 0.2; done
  - name: variant
    provider: docker
    image: ${moving}
    commands:
      - echo "variant $(cat /variant)"
  - name: abswriter
    provider: docker
    image: ${image}
    commands:
      - echo "written in the container" > ${ABS}/note.txt
      - ls /
    artifacts:
      - ${ABS}
  - name: absreader
    provider: docker
    image: ${image}
    deps:
      - workflow: abswriter
    commands:
      - cat ${ABS}/note.txt
      - echo "run \${{ run.name }}"
  - name: failing
    provider: docker
    image: ${image}
    commands:
      - echo "about to fail"
      - exit 3
      - echo never
  - name: missing
    provider: docker
    image: ${registry}/dstack-test/no-such-image:1
    commands:
      - echo never
`;
}

const MOVING = 'dstack-test/moving:latest';
/** An absolute artifact path: in the container only, never on the host. */
const ABS = '/dstack-e2e-abs-artifact';

function runName(text: string): string {
  return /Run ([a-z]+-[a-z]+-\d+)/.exec(text)?.[1] ?? '';
}

describe('e2e: provider: docker on the local backend, with the real dockerd', function () {
  this.timeout(120_000);
  let d: DockerEnv;
  let repo: string;
  let home: string;
  let env: Record<string, string>;
  let moving: string;
  const ps = async (name: string): Promise<PsView> => {
    const r = await dstack(['ps', '-a', '--json', name], { cwd: repo, home, env });
    return (JSON.parse(r.stdout) as PsView[])[0] ?? ({} as PsView);
  };
  const runOf = (name: string): Promise<string[]> => d.containers(`dstack.run=${name}`);

  before(async function () {
    d = await requireDocker(this);
    env = d.env();
    moving = d.ref(MOVING);
    repo = makeRepo({ '.dstack/workflows.yaml': workflows(d.image, moving, d.registry) });
    home = makeHome({ visibilityTimeoutSec: 3, stopGraceSec: 2, maxParallelJobs: 3 });
  });
  after(async () => {
    if (home) await killAgents(home);
    if (repo) removeAll(repo, home);
  });

  it('runs a docker workflow with env, args and entrypoint, and a bash workflow restores its artifact through deps', async () => {
    const r = await dstack(['run', 'greet', 'world'], { cwd: repo, home, env });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.include('hello world in /workflow\n');
    // `entrypoint: /bin/sh -xc`: the shell traces each command, so it was the entrypoint that ran them.
    expect(r.stdout + r.stderr).to.match(/\+ echo 'hello world in \/workflow'|\+ echo hello world in \/workflow/);
    expect(r.stderr).to.match(/dstack: pulling image 127\.0\.0\.1:\d+\/.*\n/);
    const name = runName(r.stderr);
    const dir = tempDir('download');
    try {
      const dl = await dstack(['artifacts', 'download', name, '--output', dir], { cwd: repo, home, env });
      expect(dl.code, dl.stderr).to.equal(0);
      const random = readFileSync(join(dir, 'out', 'random.bin'));
      expect(random.length).to.equal(100000);
      const reader = await dstack(['run', 'reader'], { cwd: repo, home, env });
      expect(reader.code, reader.stderr).to.equal(0);
      expect(reader.stdout).to.include('hello\n');
      expect(reader.stdout).to.include(createHash('sha256').update(random).digest('hex'));
    } finally {
      removeAll(dir);
    }
    expect(await runOf(name)).to.deep.equal([]);
  });

  it('runs the README\'s docker example, in the shape of 0.0.14\'s docs, from the local registry', async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Docker'));
    const yaml = /```yaml\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
    expect(yaml).to.include('name: hello-docker');
    // No public registry here: the image the example names is served by the local one.
    await d.push('ubuntu:22.04', 'docs');
    const docs = makeRepo({ '.dstack/workflows.yaml': yaml.replace('image: ubuntu:22.04', `image: ${d.ref('ubuntu:22.04')}`) });
    try {
      const r = await dstack(['run', 'hello-docker'], { cwd: docs, home, env });
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.equal('Hello, world!\n');
    } finally {
      removeAll(docs);
    }
  });

  it('`ports: 1` is reachable from the host, and stop leaves no container', async () => {
    const sub = await dstack(['run', '-d', 'web'], { cwd: repo, home, env });
    expect(sub.code, sub.stderr).to.equal(0);
    const name = runName(sub.stdout + sub.stderr);
    const port = await waitFor(async () => /listening on (\d+)/.exec((await dstack(['logs', name], { cwd: repo, home, env })).stdout)?.[1], 30_000, 'the server');
    const body = await waitFor(async () => {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/index.html`);
        return res.ok ? await res.text() : undefined;
      } catch {
        return undefined;
      }
    }, 15_000, 'an answer on the port');
    expect(body).to.equal('served-from-docker\n');
    expect(await runOf(name)).to.have.length(1);
    const stop = await dstack(['stop', name, '-y'], { cwd: repo, home, env });
    expect(stop.code, stop.stderr).to.equal(0);
    expect((await ps(name)).status).to.equal('stopped');
    expect(await runOf(name)).to.deep.equal([]);
  });

  it('stop: the job in the container gets SIGTERM (and may trap it); one that ignores it is killed after the grace period', async () => {
    const names: string[] = [];
    for (const wf of ['trapper', 'stubborn']) {
      const sub = await dstack(['run', '-d', wf], { cwd: repo, home, env });
      names.push(runName(sub.stdout + sub.stderr));
    }
    for (const name of names) await waitFor(async () => ((await dstack(['logs', name], { cwd: repo, home, env })).stdout.includes('started') ? true : undefined), 30_000, 'start');
    const [trapper = '', stubborn = ''] = names;
    const stop1 = await dstack(['stop', trapper, '-y'], { cwd: repo, home, env });
    expect(stop1.code, stop1.stderr).to.equal(0);
    expect((await dstack(['logs', trapper], { cwd: repo, home, env })).stdout).to.include('got TERM');
    const t = Date.now();
    const stop2 = await dstack(['stop', stubborn, '-y'], { cwd: repo, home, env });
    expect(stop2.code, stop2.stderr).to.equal(0);
    // stopGraceSec: 2, then SIGKILL.
    expect(Date.now() - t).to.be.at.least(1900);
    expect((await dstack(['logs', stubborn], { cwd: repo, home, env })).stdout).to.include('ignoring TERM');
    for (const name of names) {
      expect((await ps(name)).status).to.equal('stopped');
      expect(await runOf(name)).to.deep.equal([]);
    }
  });

  it('a frozen agent (SIGSTOP) loses its lease: its container is killed by the deadline, before attempt 2 runs the job', async () => {
    const run = spawnCli(['run', 'slow'], { cwd: repo, home, env });
    const name = await waitFor(() => runName(run.out.stderr) || undefined, 15_000, 'the run name');
    await waitFor(() => (run.out.stdout.includes('started') ? true : undefined), 30_000, 'the job to start');
    const first = (await ps(name)).attempts[0];
    const agent = JSON.parse(readFileSync(join(home, 'local', 'agents', `${first?.agentId ?? ''}.json`), 'utf8')) as { pid: number };
    const [container = ''] = await runOf(name);
    process.kill(agent.pid, 'SIGSTOP');
    // Another agent, as the fleet would start one for the job that comes back to the queue (a frozen agent's pid is alive, so none replaces it).
    spawn(process.execPath, [AGENT], { env: { ...process.env, ...env, DSTACK_HOME: home, DSTACK_AGENT_ID: `second-${Date.now()}` }, detached: true, stdio: 'ignore' }).unref();
    try {
      await waitFor(async () => ((await ps(name)).attempts.length === 2 ? true : undefined), 40_000, 'attempt 2');
      expect(await d.containers(`dstack.attempt=1`)).to.not.include(container);
      expect(await run.exited, run.out.stderr).to.equal(0);
      expect((await ps(name)).status).to.equal('done');
      expect(run.out.stdout.match(/finished/g)).to.have.length(1);
    } finally {
      process.kill(agent.pid, 'SIGKILL');
      process.kill(agent.pid, 'SIGCONT');
    }
    expect(await runOf(name)).to.deep.equal([]);
  });

  it('kill -9 of the agent mid-job: its container is gone before another attempt runs the job, and none is left at the end', async () => {
    const run = spawnCli(['run', 'slow'], { cwd: repo, home, env });
    const name = await waitFor(() => runName(run.out.stderr) || undefined, 15_000, 'the run name');
    await waitFor(() => (run.out.stdout.includes('started') ? true : undefined), 30_000, 'the job to start');
    const first = (await ps(name)).attempts[0];
    expect(await runOf(name)).to.have.length(1);
    const agent = JSON.parse(readFileSync(join(home, 'local', 'agents', `${first?.agentId ?? ''}.json`), 'utf8')) as { pid: number };
    process.kill(agent.pid, 'SIGKILL');
    // Attempt 1's container dies with its agent (the watchdog): once attempt 2 runs, only its own is there.
    await waitFor(async () => ((await ps(name)).attempts.length === 2 ? true : undefined), 30_000, 'attempt 2');
    const during = await runOf(name);
    expect(during.length).to.be.at.most(1);
    expect((await d.containers('dstack.attempt=1')).filter((c) => during.includes(c))).to.deep.equal([]);
    expect(await run.exited, run.out.stderr).to.equal(0);
    const view = await ps(name);
    expect(view.status).to.equal('done');
    expect(view.attempts.map((a) => a.attempt)).to.deep.equal([1, 2]);
    expect(run.out.stdout.match(/finished/g)).to.have.length(1);
    expect(await runOf(name)).to.deep.equal([]);
  });

  it('records the image digest from the registry, and restart runs that digest after the tag has moved', async () => {
    const digestA = await d.push(MOVING, 'A');
    const first = await dstack(['run', 'variant'], { cwd: repo, home, env });
    expect(first.code, first.stderr).to.equal(0);
    expect(first.stdout).to.include('variant A');
    const name = runName(first.stderr);
    const recorded = (await ps(name)).attempts[0]?.image;
    expect(recorded?.ref).to.equal(moving);
    expect(recorded?.digest).to.equal(digestA);
    expect(recorded?.pinned).to.equal(`${d.registry}/dstack-test/moving@${digestA}`);

    const digestB = await d.push(MOVING, 'B');
    expect(digestB).to.not.equal(digestA);
    const fresh = await dstack(['run', 'variant'], { cwd: repo, home, env });
    expect(fresh.stdout).to.include('variant B');
    const again = await dstack(['restart', name], { cwd: repo, home, env });
    expect(again.code, again.stderr).to.equal(0);
    expect(again.stdout).to.include('variant A');
    const restarted = / as ([a-z]+-[a-z]+-\d+)/.exec(again.stdout + again.stderr)?.[1] ?? '';
    expect((await ps(restarted)).attempts[0]?.image?.digest).to.equal(digestA);
  });

  it('an absolute artifact path is the container\'s: saved and restored through deps, never made or read on the host', async () => {
    expect(existsSync(ABS)).to.equal(false);
    const w = await dstack(['run', 'abswriter'], { cwd: repo, home, env });
    expect(w.code, w.stderr).to.equal(0);
    expect(w.stdout).to.include(ABS.slice(1));
    const r = await dstack(['run', 'absreader'], { cwd: repo, home, env });
    expect(r.code, r.stderr).to.equal(0);
    const name = runName(r.stderr);
    expect(r.stdout).to.equal(`written in the container\nrun ${name}\n`);
    expect(existsSync(ABS)).to.equal(false);
  });

  it('a command that fails fails the run with its exit code, and leaves no container', async () => {
    const r = await dstack(['run', 'failing'], { cwd: repo, home, env });
    expect(r.code).to.equal(3);
    expect(r.stdout).to.equal('about to fail\n');
    const name = runName(r.stderr);
    const view = await ps(name);
    expect(view.status).to.equal('failed');
    expect(view.reason).to.equal('a command exited with code 3');
    expect(await runOf(name)).to.deep.equal([]);
  });

  it('a pull failure fails the attempt with one clear line', async () => {
    const r = await dstack(['run', 'missing'], { cwd: repo, home, env });
    expect(r.code).to.not.equal(0);
    const name = runName(r.stderr);
    const view = await ps(name);
    expect(view.status).to.equal('failed');
    expect(view.reason).to.match(/^could not pull image 127\.0\.0\.1:\d+\/dstack-test\/no-such-image:1 \(.*\): check the name and tag in `image:`$/);
    expect(view.reason).to.not.include('\n');
    expect(await runOf(name)).to.deep.equal([]);
  });

  it('an agent removes the containers a dead agent on this host left behind when it starts', async () => {
    const orphan = `dstack-orphan-${Date.now()}`;
    await d.docker(['create', '--name', orphan, '--label', 'dstack.job=x', '--label', `dstack.agent-host=${hostname()}`, '--label', 'dstack.agent-pid=999999', '--label', 'dstack.agent=gone', d.image, 'sleep', '60']);
    const live = `dstack-live-${Date.now()}`;
    await d.docker(['create', '--name', live, '--label', 'dstack.job=y', '--label', `dstack.agent-host=${hostname()}`, '--label', `dstack.agent-pid=${process.pid}`, '--label', 'dstack.agent=other', d.image, 'sleep', '60']);
    try {
      const fresh = makeHome({ visibilityTimeoutSec: 3 });
      try {
        const r = await dstack(['run', 'greet'], { cwd: repo, home: fresh, env });
        expect(r.code, r.stderr).to.equal(0);
        expect(await d.containers('dstack.agent=gone')).to.deep.equal([]);
        // A container whose agent still runs is that agent's.
        expect(await d.containers('dstack.agent=other')).to.deep.equal([live]);
      } finally {
        await killAgents(fresh);
        removeAll(fresh);
      }
    } finally {
      await d.docker(['rm', '-f', orphan, live]);
    }
  });
});

describe('e2e: provider: docker pulls from a registry that needs a login, with the repo\'s registry secrets', function () {
  this.timeout(120_000);
  let d: DockerEnv;
  let dir: string;
  let registry: ChildProcess | undefined;
  let address = '';
  let repo = '';
  let home = '';
  let env: Record<string, string> = {};
  const password = 'pull-secret-5f1e2d';

  before(async function () {
    d = await requireDocker(this);
    dir = tempDir('auth-registry');
    // The registry checks bcrypt hashes: htpasswd (apache2-utils, which .ci/run installs) makes the file, or else
    // Python's crypt (gone from Python 3.13).
    const htpasswd = spawnSync('htpasswd', ['-nbB', 'puller', password], { encoding: 'utf8' });
    const line =
      htpasswd.status === 0
        ? htpasswd.stdout.trim()
        : `puller:${execFileSync('python3', ['-W', 'ignore', '-c', 'import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)).replace("$2b$", "$2y$", 1))', password], { encoding: 'utf8' }).trim()}`;
    writeFileSync(join(dir, 'htpasswd'), `${line}\n`);
    const port = await freePort();
    address = `127.0.0.1:${port}`;
    writeFileSync(
      join(dir, 'config.yml'),
      `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\nhttp:\n  addr: ${address}\nauth:\n  htpasswd:\n    realm: dstack-test\n    path: ${join(dir, 'htpasswd')}\n`,
    );
    registry = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: 'ignore' });
    await waitFor(async () => {
      try {
        return (await fetch(`http://${address}/v2/`)).status === 401 ? true : undefined;
      } catch {
        return undefined;
      }
    }, 15_000, 'the registry');
    // Pushed with a login of the test's own (its DOCKER_CONFIG), never the agent's.
    const config = join(dir, 'docker-config');
    const as = { ...process.env, ...d.env(), DOCKER_CONFIG: config };
    execFileSync('docker', ['login', '--username', 'puller', '--password-stdin', address], { env: as, input: password, stdio: ['pipe', 'ignore', 'pipe'] });
    execFileSync('docker', ['tag', d.image, `${address}/private/busybox:1`], { env: as });
    execFileSync('docker', ['push', `${address}/private/busybox:1`], { env: as, stdio: 'ignore' });
    execFileSync('docker', ['rmi', `${address}/private/busybox:1`], { env: as, stdio: 'ignore' });
    repo = makeRepo({
      '.dstack/workflows.yaml': `workflows:\n  - name: private\n    provider: docker\n    image: ${address}/private/busybox:1\n    commands:\n      - echo "pulled privately"\n      - env | grep -c DSTACK_REGISTRY || true\n`,
    });
    home = makeHome({ visibilityTimeoutSec: 3 });
    env = d.env();
  });
  after(async () => {
    registry?.kill('SIGKILL');
    if (home) await killAgents(home);
    removeAll(repo, home, dir);
  });

  it('without the secrets: one line naming them; with them: pulled, and the password is nowhere in the run, its logs or its job; with the registry gone, the copy on the machine runs', async () => {
    const denied = await dstack(['run', 'private'], { cwd: repo, home, env });
    expect(denied.code).to.not.equal(0);
    const first = runName(denied.stderr);
    const view = JSON.parse((await dstack(['ps', '-a', '--json', first], { cwd: repo, home, env })).stdout) as PsView[];
    expect(view[0]?.reason, view[0]?.reason ?? "").to.match(/^could not pull image 127\.0\.0\.1:\d+\/private\/busybox:1 \(.*\): set the repo secrets DSTACK_REGISTRY_USERNAME and DSTACK_REGISTRY_PASSWORD \(`dstack secrets add`\) for 127\.0\.0\.1:\d+$/);

    for (const [name, value] of [['DSTACK_REGISTRY_USERNAME', 'puller'], ['DSTACK_REGISTRY_PASSWORD', password]] as const) {
      const add = await dstack(['secrets', 'add', name, value], { cwd: repo, home, env });
      expect(add.code, add.stderr).to.equal(0);
    }
    const ok = await dstack(['run', 'private'], { cwd: repo, home, env });
    expect(ok.code, ok.stderr).to.equal(0);
    expect(ok.stdout).to.include('pulled privately\n');
    // The job does not get the registry login: its env has no DSTACK_REGISTRY_* variable.
    expect(ok.stdout).to.include('\n0\n');
    const name = runName(ok.stderr);
    const logs = await dstack(['logs', name], { cwd: repo, home, env });
    const ps = await dstack(['ps', '-a', '--json', name], { cwd: repo, home, env });
    expect(logs.stdout + logs.stderr + ps.stdout + ok.stdout + ok.stderr).to.not.include(password);
    expect(filesHolding(join(home, 'local', 'store'), password)).to.deep.equal([]);

    // The registry goes away (a machine offline, a rate limit): the copy this machine has runs, pinned by its digest.
    const pulledDigest = (JSON.parse(ps.stdout) as PsView[])[0]?.attempts[0]?.image?.digest ?? '';
    registry?.kill('SIGKILL');
    const offline = await dstack(['run', 'private'], { cwd: repo, home, env });
    expect(offline.code, offline.stderr).to.equal(0);
    expect(offline.stdout).to.include('pulled privately\n');
    expect(offline.stderr).to.match(new RegExp(`dstack: could not pull image 127\\.0\\.0\\.1:\\d+/private/busybox:1 \\(.*\\): using the copy on this machine, ${pulledDigest}\n`));
    const again = JSON.parse((await dstack(['ps', '-a', '--json', runName(offline.stderr)], { cwd: repo, home, env })).stdout) as PsView[];
    expect(again[0]?.attempts[0]?.image?.digest).to.equal(pulledDigest);
  });
});

