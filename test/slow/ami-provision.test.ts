import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { Chroot, baseRootTarball, run, type RunResult } from '../support/chroot.js';
import { ROOT, dstack, makeRepo, removeAll, tempDir, waitFor } from '../support/cli.js';
import { startEmulator, uniqueName, type Emulator } from '../support/fauxqs.js';
import { ImdsServer } from '../support/imds-server.js';
import { SecretsManagerFake } from '../support/secrets-manager-fake.js';
import { SYSTEMD_DEFAULT_PATH, serviceCommand } from '../support/systemd-unit.js';

// The image's own provisioning (ami/provision.sh, offline switch on) in a fresh Debian bookworm
// chroot, then the agent started exactly as ami/dstack-agent.service starts it, with its config
// from a loopback IMDS, taking a job that the real CLI submits to fauxqs. Needs root, debootstrap
// and deb.debian.org (once a day: the base root is cached in /var/tmp/dstack-debootstrap-cache).
// The chroot stands in for the Deep Learning Base AMI in two ways: Debian's docker.io is installed
// before provisioning, and /usr/bin/nvidia-smi is a stand-in that lists two A10Gs (GPU_LINES).
// "Docker present" means that here: the docker CLI, dockerd and containerd on the machine and the
// unit's PATH, but no daemon running (no systemd in a chroot, and dockerd would need cgroups,
// iptables and a storage driver of its own).

const BUNDLE = join(ROOT, 'dist', 'agent-bundle');
const UNIT = join(ROOT, 'ami', 'dstack-agent.service');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const IDLE_SEC = 10;
// What nvidia-smi prints on a g5.12xlarge's first two A10Gs (index, name, memory.total in MiB).
const GPU_LINES = ['0, NVIDIA A10G, 23028', '1, NVIDIA A10G, 23028'];
const FAKE_NVIDIA_SMI = `#!/bin/sh
# A stand-in for the driver's nvidia-smi: --query-gpu answers for two A10Gs, in the --format asked for.
fmt=
for a in "$@"; do case "$a" in --format=*) fmt=\${a#--format=} ;; esac; done
case "$*" in *--query-gpu=*) ;; *) echo "NVIDIA-SMI stand-in (dstack slow test)"; exit 0 ;; esac
case "$fmt" in *noheader*) ;; *) echo "index, name, memory.total [MiB]" ;; esac
unit=" MiB"
case "$fmt" in *nounits*) unit= ;; esac
${GPU_LINES.map((l) => `echo "${l}$unit"`).join('\n')}
`;
const WORKFLOWS = `workflows:
  - name: hello
    provider: bash
    commands:
      - echo "Hello from $RUN_NAME"
      - echo "marker $(cat /etc/dstack/test-marker)"
      - echo "pip cache $PIP_CACHE_DIR"
      - echo "user $(id -un) home $HOME"
`;

interface PsJson {
  status: string;
  attempts: Array<{ agentId: string; hostFacts?: { agentVersion?: string } }>;
}

describe('slow: the agent image, provisioned in a Debian chroot, runs a job from the queue', function () {
  this.timeout(600_000);
  const timings: Record<string, string> = {};
  let root: Chroot | undefined;
  let provision: RunResult;
  let pullImages: RunResult;
  let dockerInstall: RunResult;
  let emulator: Emulator | undefined;
  let imds: ImdsServer | undefined;
  const secretsManager = new SecretsManagerFake();
  let agent: ChildProcess | undefined;
  let agentExit: Promise<number | null> | undefined;
  // The agent's stdout (its JSON log lines) and stderr, as the journal would get them.
  let agentOut = '';
  let agentErr = '';
  const dirs: string[] = [];
  const id = `i-${randomBytes(9).toString('hex').slice(0, 17)}`;
  const withAgentOutput = <T>(p: Promise<T>): Promise<T> =>
    p.catch((e: unknown) => {
      throw new Error(`${(e as Error).message}; the agent said:\n${agentOut}${agentErr}`);
    });

  before(async () => {
    if (process.getuid?.() !== 0) throw new Error('this test needs root (debootstrap, chroot, mount)');
    for (const f of ['dstack-agent.mjs', 'VERSION', 'package.json']) {
      if (!existsSync(join(BUNDLE, f))) throw new Error(`${join(BUNDLE, f)} is missing: run \`npm run build:agent\``);
    }
    let t = Date.now();
    const base = await baseRootTarball();
    timings.debootstrap = base.builtMs === undefined ? 'cached' : `${(base.builtMs / 1000).toFixed(1)} s`;
    root = await Chroot.create(base.file);
    timings.freshRoot = `${((Date.now() - t - (base.builtMs ?? 0)) / 1000).toFixed(1)} s`;
    // What the Deep Learning Base AMI has before provisioning: Docker, and the driver's nvidia-smi.
    t = Date.now();
    dockerInstall = await root.aptInstall(['docker.io']);
    timings.dockerInstall = `${((Date.now() - t) / 1000).toFixed(1)} s`;
    writeFileSync(root.path('usr/bin/nvidia-smi'), FAKE_NVIDIA_SMI, { mode: 0o755 });
    // What Packer's file provisioners upload: ami/ and the bundle in ami/agent-bundle.
    cpSync(join(ROOT, 'ami'), root.path('tmp/dstack-ami'), { recursive: true });
    cpSync(BUNDLE, root.path('tmp/dstack-ami/agent-bundle'), { recursive: true });
    // The offline dir: this machine's node binary (bookworm too, so the same glibc).
    mkdirSync(root.path('tmp/dstack-offline/node/bin'), { recursive: true });
    copyFileSync(process.execPath, root.path('tmp/dstack-offline/node/bin/node'));
    t = Date.now();
    provision = await run('chroot', [
      root.dir, '/usr/bin/env', '-i', `PATH=${SYSTEMD_DEFAULT_PATH}`,
      'DSTACK_AMI_OFFLINE_DIR=/tmp/dstack-offline', `DSTACK_AGENT_VERSION=${VERSION}`, 'bash', '/tmp/dstack-ami/provision.sh',
    ]);
    timings.provisioning = `${((Date.now() - t) / 1000).toFixed(1)} s`;
    // Packer's next provisioner, as the template runs it.
    pullImages = await run('chroot', [
      root.dir, '/usr/bin/env', '-i', `PATH=${SYSTEMD_DEFAULT_PATH}`, 'DSTACK_AMI_OFFLINE_DIR=/tmp/dstack-offline', 'bash', '/tmp/dstack-ami/pull-images.sh',
    ]);
  });

  after(async () => {
    if (agent?.exitCode === null && agent.signalCode === null) agent.kill('SIGKILL');
    await root?.destroy();
    await imds?.stop();
    await emulator?.stop();
    await secretsManager.stop();
    removeAll(...dirs);
    process.stdout.write(`      timings: ${Object.entries(timings).map(([k, v]) => `${k} ${v}`).join(', ')}\n`);
  });

  it('provisions offline: Node at /usr/bin/node, the agent bundle, the enabled unit, the pip cache; says what it skipped', async () => {
    expect(provision.code, provision.output).to.equal(0);
    const r = root as Chroot;
    expect(provision.output).to.match(/^\[dstack-ami\] SKIPPED Miniforge and the py3\.x envs: offline and no \/tmp\/dstack-offline\/Miniforge3-Linux-x86_64\.sh/m);
    expect(provision.output).to.match(/^\[dstack-ami\] SKIPPED code-server, JupyterLab and the Notebook: offline/m);
    // Docker came with the "base image"; the toolkit would come from NVIDIA's repository, not reached offline.
    expect(dockerInstall.code, dockerInstall.output).to.equal(0);
    expect(provision.output).to.match(/^\[dstack-ami\] docker: present \(Docker version 20\.10\.\d+/m);
    expect(provision.output).to.match(/^\[dstack-ami\] SKIPPED nvidia container toolkit: offline/m);
    expect(pullImages.code, pullImages.output).to.equal(0);
    expect(pullImages.output).to.match(/^\[dstack-ami\] SKIPPED the docker images \(nvidia\/cuda:\S+ .*\): offline and dockerd does not answer$/m);
    expect(provision.output).to.match(new RegExp(`^\\[dstack-ami\\] done in \\d+ s: agent ${VERSION} with ${process.version}$`, 'm'));
    const node = await run('chroot', [r.dir, '/usr/bin/node', '-p', 'process.version'], { env: { PATH: SYSTEMD_DEFAULT_PATH } });
    expect(node.output.trim()).to.equal(process.version);
    expect(readFileSync(r.path('opt/dstack/agent/VERSION'), 'utf8').trim()).to.equal(VERSION);
    expect(readFileSync(r.path('opt/dstack/agent/dstack-agent.mjs'))).to.deep.equal(readFileSync(join(BUNDLE, 'dstack-agent.mjs')));
    expect(readFileSync(r.path('etc/systemd/system/dstack-agent.service'), 'utf8')).to.equal(readFileSync(UNIT, 'utf8'));
    expect(readlinkSync(r.path('etc/systemd/system/multi-user.target.wants/dstack-agent.service'))).to.equal('/etc/systemd/system/dstack-agent.service');
    expect(readFileSync(r.path('etc/pip.conf'), 'utf8')).to.match(/^cache-dir = \/var\/cache\/dstack\/pip$/m);
    expect(existsSync(r.path('var/cache/dstack/pip'))).to.equal(true);
    // The job user, and the unit that keeps it off IMDS (iptables came with docker.io, as on the base AMI).
    expect(readFileSync(r.path('etc/passwd'), 'utf8')).to.match(/^dstack-job:x:\d+:\d+::\/var\/lib\/dstack-job:\/bin\/bash$/m);
    expect(readlinkSync(r.path('etc/systemd/system/multi-user.target.wants/dstack-job-imds-block.service'))).to.equal('/etc/systemd/system/dstack-job-imds-block.service');
    expect(readFileSync(r.path('opt/dstack/agent/job-imds-block.sh'), 'utf8')).to.equal(readFileSync(join(ROOT, 'ami', 'job-imds-block.sh'), 'utf8'));
    expect(existsSync(r.path('usr/sbin/iptables'))).to.equal(true);
    expect(provision.output).to.not.match(/SKIPPED iptables/);
  });

  it('starts the agent as the unit does, with config from IMDS user-data, and it runs a job the CLI submits', async () => {
    expect(provision.code, 'provisioning failed').to.equal(0);
    const r = root as Chroot;
    emulator = await startEmulator();
    const sm = await secretsManager.start();
    const repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
    const home = tempDir('ami-home');
    dirs.push(repo, home);
    const cliEnv = { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1' };
    const c = await dstack(
      ['config', '--backend', 'aws', '--region', 'us-east-1', '--bucket', uniqueName('dstack'), '--queue-prefix', uniqueName('ami'),
        '--sqs-endpoint', emulator.endpoint, '--s3-endpoint', emulator.endpoint, '--sts-endpoint', emulator.endpoint, '--secretsmanager-endpoint', sm, '--agents', 'none'],
      { cwd: repo, home, env: cliEnv },
    );
    expect(c.code, c.stderr).to.equal(0);
    // The user-data is dstack's config.yaml: the CLI's own, with a short idle timeout for the agent.
    const config = parse(readFileSync(join(home, 'config.yaml'), 'utf8')) as { local?: Record<string, unknown> };
    config.local = { ...config.local, agentIdleTimeoutSec: IDLE_SEC, visibilityTimeoutSec: 30, stopGraceSec: 2 };
    imds = new ImdsServer(id, stringify(config));
    imds.setInstanceRole({ name: 'dstack-agent', accessKeyId: 'ASIATESTAGENT', secretAccessKey: randomBytes(20).toString('hex'), sessionToken: randomBytes(32).toString('hex') });
    const imdsUrl = await imds.start();
    // An operator's overrides, where the unit reads them; the AWS SDK takes its credentials from
    // the same IMDS (as from an instance profile), not from AWS_* variables.
    appendFileSync(r.path('etc/dstack/agent.env'), `DSTACK_IMDS_URL=${imdsUrl}\nAWS_EC2_METADATA_SERVICE_ENDPOINT=${imdsUrl}\n`);
    const marker = randomBytes(8).toString('hex');
    writeFileSync(r.path('etc/dstack/test-marker'), `${marker}\n`);

    const unit = serviceCommand(readFileSync(UNIT, 'utf8'), (p) => (existsSync(r.path(p)) ? readFileSync(r.path(p), 'utf8') : undefined));
    expect(unit.argv).to.deep.equal(['/usr/bin/node', '/opt/dstack/agent/dstack-agent.mjs']);
    expect(unit.env).to.include({ DSTACK_HOME: '/var/lib/dstack', DSTACK_AGENT_CONFIG: 'user-data', DSTACK_IMDS_URL: imdsUrl });
    const t = Date.now();
    const child = spawn('chroot', [r.dir, ...unit.argv], { env: unit.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    agent = child;
    agentExit = new Promise((resolve) => child.on('close', (code) => resolve(code)));
    child.stdout.on('data', (d: Buffer) => (agentOut += d.toString()));
    child.stderr.on('data', (d: Buffer) => (agentErr += d.toString()));
    await withAgentOutput(waitFor(() => (existsSync(r.path(`var/lib/dstack/local/agents/${id}.json`)) ? true : undefined), 30_000, `the agent to register as ${id}`));
    timings.agentStart = `${((Date.now() - t) / 1000).toFixed(1)} s`;

    const sub = await dstack(['run', 'hello', '-d'], { cwd: repo, home, env: cliEnv });
    expect(sub.code, sub.stderr).to.equal(0);
    const name = /Run ([a-z]+-[a-z]+-\d+)/.exec(sub.stdout + sub.stderr)?.[1] ?? '';
    expect(name, sub.stdout).to.not.equal('');
    const view = await withAgentOutput(waitFor(
      async () => {
        const ps = await dstack(['ps', name, '--json'], { cwd: repo, home, env: cliEnv });
        const v = (JSON.parse(ps.stdout) as PsJson[])[0];
        return v && ['done', 'failed', 'stopped'].includes(v.status) ? v : undefined;
      },
      60_000,
      `run ${name} to finish`,
    ));
    expect(view.status, agentOut + agentErr).to.equal('done');
    expect(view.attempts.at(-1)?.agentId).to.equal(id);
    expect(view.attempts.at(-1)?.hostFacts?.agentVersion).to.equal(VERSION);
    const logs = await dstack(['logs', name], { cwd: repo, home, env: cliEnv });
    // The unit's DSTACK_JOB_USER: the job runs unprivileged, as on the image, where IMDS is blocked for it.
    expect(logs.stdout).to.equal(`Hello from ${name}\nmarker ${marker}\npip cache /var/cache/dstack/pip\nuser dstack-job home /var/lib/dstack-job\n`);
    // `agents: none`: the CLI started no agent of its own (it writes a log for each one it starts).
    expect(existsSync(join(home, 'local', 'logs')) ? readdirSync(join(home, 'local', 'logs')) : []).to.deep.equal([]);
    // Every stdout line is a JSON log line of this agent (stderr may carry the AWS SDK's warnings).
    const lines = agentOut.trim().split('\n').map((l) => JSON.parse(l) as { agentId?: string });
    expect(lines.length).to.be.greaterThan(1);
    for (const line of lines) expect(line.agentId).to.equal(id);
    expect(imds.hits.get('/latest/user-data')).to.equal(1);
    expect(imds.hits.get('/latest/meta-data/instance-id')).to.equal(1);
    expect(imds.hits.get('/latest/meta-data/iam/security-credentials/dstack-agent')).to.be.greaterThan(0);
  });

  it('started and ran its job with Docker present (the CLI on its PATH, no daemon running)', async () => {
    const r = root as Chroot;
    expect(agent, 'the agent was not started').to.not.equal(undefined);
    const docker = await run('chroot', [r.dir, 'docker', '--version'], { env: { PATH: SYSTEMD_DEFAULT_PATH } });
    expect(docker.output).to.match(/^Docker version 20\.10\./);
    const smi = await run('chroot', [r.dir, 'nvidia-smi', '--query-gpu=index,name,memory.total', '--format=csv,noheader,nounits'], { env: { PATH: SYSTEMD_DEFAULT_PATH } });
    expect(smi.output).to.equal(`${GPU_LINES.join('\n')}\n`);
    // The agent took and ran the job above with Docker there: nothing of its start tripped on a daemon that is not running.
    const lines = agentOut.trim().split('\n').map((l) => JSON.parse(l) as { level?: string; msg?: string });
    expect(lines.filter((l) => l.level === 'error'), agentOut).to.deep.equal([]);
  });

  it('found its GPUs at start through nvidia-smi (the stand-in\'s two A10Gs)', function () {
    const lines = agentOut.trim().split('\n').map((l) => JSON.parse(l) as { msg?: string });
    expect(readFileSync(join(BUNDLE, 'dstack-agent.mjs'), 'utf8')).to.include('query-gpu');
    const gpus = lines.find((l) => /GPU/.test(l.msg ?? ''));
    expect(gpus?.msg, agentOut).to.match(/NVIDIA A10G/);
    expect(gpus?.msg).to.match(/\b2\b/);
  });

  it('exits 0 after its idle timeout (the unit then powers the instance off)', async () => {
    if (!agentExit) throw new Error('the agent was not started');
    const t = Date.now();
    const code = await Promise.race([agentExit, new Promise<string>((r) => setTimeout(() => r('still running'), (IDLE_SEC + 15) * 1000))]);
    expect(code, agentOut + agentErr).to.equal(0);
    expect(agentOut).to.match(/"msg":"idle timeout: exiting"/);
    timings.idleExitAfterJob = `${((Date.now() - t) / 1000).toFixed(1)} s`;
    if (agentErr) process.stdout.write(`      the agent's stderr:\n${agentErr.replace(/^/gm, '        ')}\n`);
  });
});
