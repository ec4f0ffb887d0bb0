import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dstack, killAgents, makeHome, makeRepo, removeAll, tempDir, waitFor } from '../support/cli.js';

/** What a job may find in its environment: the README's lists. */
const BASE = ['PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'LANGUAGE', 'LC_ALL', 'LC_CTYPE', 'TZ'];
const NETWORK = ['http_proxy', 'https_proxy', 'no_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'SSL_CERT_FILE', 'SSL_CERT_DIR', 'REQUESTS_CA_BUNDLE'];
const PYTHON_SETUP = ['PIP_CACHE_DIR', 'CONDA_PKGS_DIRS', 'CONDA_ENVS_PATH', 'CUDA_HOME', 'LD_LIBRARY_PATH'];
const JOB_VARS = ['RUN_NAME', 'JOB_ID', 'PYTHONUNBUFFERED', 'VIRTUAL_ENV', 'PORT_0', 'JOB_PORT_0', 'CUDA_VISIBLE_DEVICES', 'NVIDIA_VISIBLE_DEVICES', 'CUDA_DEVICE_ORDER'];
/** Set by bash itself for the commands it runs. */
const SHELL_VARS = ['PWD', 'OLDPWD', 'SHLVL', '_'];

const PLANTED = {
  AWS_ACCESS_KEY_ID: 'AKIAPLANTEDKEY000001',
  AWS_SECRET_ACCESS_KEY: 'planted-secret-access-key-value',
  DSTACK_FOO: 'planted-dstack-setting',
  SOME_RANDOM_VAR: 'planted-random-value',
};

describe("e2e: a job's environment is its own", function () {
  this.timeout(60_000);
  let repo: string;
  let home: string;
  before(() => {
    repo = makeRepo({
      '.dstack/workflows.yaml': `workflows:
  - name: show-env
    provider: bash
    ports: 1
    env:
      - GREETING=hello
      - WHO=\${{ run.name }}
    commands:
      - env -0
`,
    });
    home = makeHome();
  });
  after(async () => {
    await killAgents(home);
    removeAll(repo, home);
  });

  it("has the workflow's env, the job variables and the base, and nothing of the CLI's or the agent's", async () => {
    const r = await dstack(['run', 'show-env'], { cwd: repo, home, env: PLANTED });
    expect(r.code, r.stderr).to.equal(0);
    const vars = new Map(
      r.stdout
        .split('\0')
        .filter((e) => e.length > 0)
        .map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)] as const),
    );
    const allowed = new Set([...BASE, ...NETWORK, ...PYTHON_SETUP, ...JOB_VARS, ...SHELL_VARS, 'GREETING', 'WHO']);
    expect([...vars.keys()].filter((k) => !allowed.has(k))).to.deep.equal([]);
    expect(vars.get('GREETING')).to.equal('hello');
    expect(vars.get('WHO')).to.equal(vars.get('RUN_NAME'));
    expect(vars.get('PORT_0')).to.match(/^\d+$/);
    expect(vars.get('JOB_PORT_0')).to.equal(vars.get('PORT_0'));
    for (const value of Object.values(PLANTED)) expect(r.stdout).not.to.include(value);
  });
});

function hasBwrap(): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v bwrap'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('e2e: the local sandbox (bwrap)', function () {
  this.timeout(60_000);
  let userHome: string;
  let repo: string;
  let homes: string[] = [];
  /** On the host's disk (not under /tmp, which the sandbox replaces with its own). */
  const hostFile = `/var/tmp/dstack-sandbox-probe-${process.pid}`;
  before(function () {
    if (!hasBwrap()) {
      if (process.env.CI) throw new Error('bwrap (bubblewrap) is not installed: CI must install it (see .ci/run)');
      this.skip();
    }
    userHome = tempDir('userhome');
    mkdirSync(join(userHome, '.aws'));
    writeFileSync(join(userHome, '.aws', 'credentials'), 'aws-credentials-content\n');
    mkdirSync(join(userHome, '.ssh'));
    writeFileSync(join(userHome, '.ssh', 'id_ed25519'), 'ssh-key-content\n');
  });
  afterEach(async () => {
    for (const h of homes) await killAgents(h);
    removeAll(repo, ...homes, hostFile);
    homes = [];
  });
  after(() => {
    if (userHome) removeAll(userHome);
  });

  /**
   * A dstack home with a secret in it, and a repo with two jobs: \`holder\` keeps a file in its own
   * folder while it runs; \`probe\` tries to read what is not its own and to write outside its folder.
   */
  function setUp(config: Record<string, unknown>): string {
    const home = makeHome(config);
    homes.push(home);
    writeFileSync(join(home, 'secret-store.txt'), 'dstack-home-content\n');
    const probe = (label: string, cmd: string): string => `      - (${cmd}) >/dev/null 2>&1 && echo "${label}=yes" || echo "${label}=no"`;
    repo = makeRepo({
      '.dstack/workflows.yaml': `workflows:
  - name: holder
    provider: bash
    commands:
      - echo other-job-content > holder-file.txt
      - echo ready
      - sleep 60
  - name: probe
    provider: bash
    commands:
${probe('aws', 'cat "$HOME/.aws/credentials"')}
${probe('ssh', 'cat "$HOME/.ssh/id_ed25519"')}
${probe('dstack-home', `cat '${join(home, 'secret-store.txt')}'`)}
${probe('other-job', `find '${join(home, 'local', 'work')}' -name holder-file.txt -exec cat {} + | grep -q other-job-content`)}
${probe('write-host', `echo x > '${hostFile}'`)}
${probe('write-tmp', 'echo x > /tmp/scratch && grep -q x /tmp/scratch')}
      - mkdir -p out && echo result > out/r.txt && echo own=yes
    artifacts:
      - out
`,
    });
    return home;
  }

  async function probe(home: string): Promise<{ out: string; artifact: string }> {
    // Another job, running, with a file in its folder.
    const holder = await dstack(['run', '-d', 'holder'], { cwd: repo, home, env: { HOME: userHome } });
    const holderName = /Run ([a-z]+-[a-z]+-\d+)/.exec(holder.stdout)?.[1] ?? '';
    await waitFor(async () => ((await dstack(['logs', holderName], { cwd: repo, home })).stdout.includes('ready') ? true : undefined), 20_000, 'the holder job');
    const r = await dstack(['run', 'probe'], { cwd: repo, home, env: { HOME: userHome } });
    expect(r.code, r.stderr).to.equal(0);
    const name = /Run ([a-z]+-[a-z]+-\d+)/.exec(r.stderr)?.[1] ?? '';
    const dl = tempDir('dl');
    try {
      const d = await dstack(['artifacts', 'download', name, '-o', dl], { cwd: repo, home, env: { HOME: userHome } });
      expect(d.code, d.stderr).to.equal(0);
      return { out: r.stdout, artifact: readFileSync(join(dl, 'out', 'r.txt'), 'utf8') };
    } finally {
      removeAll(dl);
    }
  }

  it("hides ~/.aws, ~/.ssh, DSTACK_HOME and other jobs' folders, keeps the host read-only, and the job's commands and artifacts work", async () => {
    const home = setUp({});
    const { out, artifact } = await probe(home);
    expect(out).to.equal(['aws=no', 'ssh=no', 'dstack-home=no', 'other-job=no', 'write-host=no', 'write-tmp=yes', 'own=yes', ''].join('\n'));
    expect(artifact).to.equal('result\n');
    expect(existsSync(hostFile)).to.equal(false);
  });

  it('with local.sandbox: off, the job reaches all the agent user can (as documented)', async () => {
    const home = setUp({ sandbox: 'off' });
    const { out, artifact } = await probe(home);
    expect(out).to.equal(['aws=yes', 'ssh=yes', 'dstack-home=yes', 'other-job=yes', 'write-host=yes', 'write-tmp=yes', 'own=yes', ''].join('\n'));
    expect(artifact).to.equal('result\n');
    expect(existsSync(hostFile)).to.equal(true);
  });
});
