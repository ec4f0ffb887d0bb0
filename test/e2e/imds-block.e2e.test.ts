import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, dstack, killAgents, makeHome, makeRepo, removeAll, tempDir } from '../support/cli.js';
import { makeThrowawayUser, removeThrowawayUser, throwawayUserOrSkip } from '../support/job-user.js';

/** The probe's report: what each job printed, and what the agent's own IMDS client got. */
interface Report {
  agent: string | null;
  jobUser: string;
  agentUser: string;
  jobUserSandboxed: string | null;
  agentUserSandboxed: string | null;
  dockerUser: string;
}

/** The tools the test needs, by the Debian package that brings them; the first one missing, if any. */
function missingTool(): string | undefined {
  const tools: Array<[string, string]> = [
    ['unshare', 'util-linux'],
    ['ip', 'iproute2'],
    ['iptables', 'iptables'],
    ['ip6tables', 'iptables'],
  ];
  for (const [tool, pkg] of tools) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} (Debian package ${pkg})`;
  }
  return undefined;
}

/**
 * Runs the probe in a fresh network namespace: lo up, 169.254.169.254 on it, and the agent image's
 * own rule script (ami/job-imds-block.sh) for the job user. Nothing outside the namespace changes.
 */
function probe(dir: string, user: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const setup = [
    'set -e',
    'ip link set lo up',
    'ip addr add 169.254.169.254/32 dev lo',
    `bash ${JSON.stringify(join(ROOT, 'ami', 'job-imds-block.sh'))} "$1" >&2`,
    'exec "$2" --import tsx "$3" "$4" "$1"',
  ].join('\n');
  const args = ['--net', '--', 'bash', '-c', setup, 'setup', user, process.execPath, join(ROOT, 'test', 'support', 'imds-block-probe.ts'), dir];
  return new Promise((resolve, reject) => {
    const child = spawn('unshare', args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('e2e: EC2 jobs are kept off the instance metadata service (ami/job-imds-block.sh)', function () {
  this.timeout(60_000);
  let dir: string;
  let report: Report;
  let jobUid: string;
  // A user of this test's own: the agent kills every process of its job user when a job ends.
  let user: string | undefined;

  before(async function () {
    const made = process.getuid?.() !== 0 ? undefined : makeThrowawayUser();
    const why = made === undefined ? 'root (to make a network namespace and set its firewall)' : 'why' in made ? made.why : missingTool();
    if (made && 'name' in made) user = made.name;
    if (why !== undefined) {
      if (process.env.CI) throw new Error(`this test needs ${why}: CI must provide it (see .ci/run)`);
      this.skip();
    }
    dir = tempDir('imds-block');
    // The job user passes through to its job's folder, as it does through /var/lib/dstack on the image.
    chmodSync(dir, 0o711);
    const name = user ?? '';
    const r = await probe(dir, name);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stderr).to.include(`connections of user ${name}, and of containers, to IMDS are rejected`);
    report = JSON.parse(r.stdout) as Report;
    jobUid = String(spawnSync('id', ['-u', name]).stdout).trim();
  });
  after(() => {
    if (dir) removeAll(dir);
    if (user) removeThrowawayUser(user);
  });

  it('a job run as the job user cannot connect to IMDS; the agent, and a job run as the agent user, can', () => {
    expect(report.agent).to.equal('i-0probe');
    expect(report.jobUser).to.equal(`uid=${jobUid}\nimds: refused\n`);
    expect(report.agentUser).to.equal('uid=0\nHTTP/1.1 200 OK\n');
  });

  it('containers (provider: docker) are refused too: DOCKER-USER, which docker puts before its own forwarding rules, rejects IMDS', () => {
    expect(report.dockerUser.split('\n')).to.include('-A DOCKER-USER -d 169.254.169.254/32 -j REJECT --reject-with icmp-port-unreachable');
  });

  it('under the bwrap sandbox too: the job user is refused, the agent user is not', function () {
    if (spawnSync('sh', ['-c', 'command -v bwrap']).status !== 0) {
      if (process.env.CI) throw new Error('bwrap (bubblewrap) is not installed: CI must install it (see .ci/run)');
      this.skip();
    }
    expect(report.jobUserSandboxed, 'bwrap did not start as the job user (user namespaces off?)').to.equal(`uid=${jobUid}\nimds: refused\n`);
    expect(report.agentUserSandboxed).to.equal('uid=0\nHTTP/1.1 200 OK\n');
  });
});

describe('e2e: an agent started with DSTACK_JOB_USER runs its jobs as that user', function () {
  this.timeout(60_000);
  let repo: string;
  let home: string;
  let user: string | undefined;
  before(function () {
    user = throwawayUserOrSkip(this);
    repo = makeRepo({
      '.dstack/workflows.yaml': `workflows:
  - name: who
    provider: bash
    commands:
      - id -un
      - echo "$HOME"
      - touch mine && stat -c %U mine
`,
    });
    home = makeHome();
    // As /var/lib/dstack on the image: the job user passes through to its own folder.
    chmodSync(home, 0o711);
  });
  after(async () => {
    if (home) await killAgents(home);
    if (home) removeAll(repo, home);
    if (user) removeThrowawayUser(user);
  });

  it('the job runs as the user, with its HOME, in a folder it owns (local agents take the CLI environment)', async () => {
    const name = user ?? '';
    const r = await dstack(['run', 'who'], { cwd: repo, home, env: { DSTACK_JOB_USER: name } });
    expect(r.code, r.stderr).to.equal(0);
    const userHome = String(spawnSync('getent', ['passwd', name]).stdout).trim().split(':')[5];
    expect(r.stdout).to.equal(`${name}\n${userHome}\n${name}\n`);
  });
});
