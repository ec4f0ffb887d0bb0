import { expect } from 'chai';
import { chmodSync, lstatSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { Attempt } from '../../agent/attempt.js';
import { asJobUser, chownTree, jobUserFor, lookupJobUser, mkdirFor, type JobUser } from '../../agent/job-user.js';
import { requirementsEnv } from '../../agent/python-env.js';
import { parseConfig } from '../../common/config.js';
import { ConfigError } from '../../common/errors.js';
import { agentUserData } from '../../common/fleet/user-data.js';
import { jsonLogger } from '../../common/log.js';
import { parseLogChunk } from '../../common/log-records.js';
import { LocalStore } from '../../common/local/local-store.js';
import { runKeys } from '../../common/runs.js';
import type { JobSpec } from '../../common/spec/job-spec.js';
import { removeAll, tempDir } from '../support/cli.js';

const PASSWD = 'root:x:0:0:root:/root:/bin/bash\ndstack-job:x:998:997::/var/lib/dstack-job:/bin/bash\n';

describe('the job user (DSTACK_JOB_USER): jobs on the agent image run unprivileged, off IMDS', function () {
  this.timeout(20_000);
  let dir: string;
  let passwd: string;
  beforeEach(() => {
    dir = tempDir('job-user');
    passwd = join(dir, 'passwd');
    writeFileSync(passwd, PASSWD);
  });
  afterEach(() => removeAll(dir));

  it('is looked up by name; a missing user or root is a config error that says what to do', async () => {
    expect(await lookupJobUser('dstack-job', passwd)).to.deep.equal({ name: 'dstack-job', uid: 998, gid: 997, home: '/var/lib/dstack-job' });
    const missing = await lookupJobUser('nobody-here', passwd).catch((e: unknown) => e);
    expect(missing).to.be.instanceOf(ConfigError);
    expect((missing as Error).message).to.equal(
      `DSTACK_JOB_USER=nobody-here: no such user in ${passwd} (the agent image creates \`dstack-job\`; unset DSTACK_JOB_USER to run jobs as the agent's user)`,
    );
    expect(((await lookupJobUser('root', passwd).catch((e: unknown) => e)) as Error).message).to.match(/is root: jobs must run as an unprivileged user/);
  });

  it('aws.jobInstanceRole: true (or no DSTACK_JOB_USER) runs jobs as the agent user; the job user gets its own HOME', async () => {
    expect(await jobUserFor('dstack-job', false, 0, passwd)).to.include({ uid: 998 });
    expect(await jobUserFor('dstack-job', true, 0, passwd)).to.equal(undefined);
    expect(await jobUserFor(undefined, false, 0, passwd)).to.equal(undefined);
    const notRoot = await jobUserFor('dstack-job', false, 1000, passwd).catch((e: unknown) => e);
    expect(notRoot).to.be.instanceOf(ConfigError);
    expect((notRoot as Error).message).to.match(/the agent runs as uid 1000, and only root can start jobs as another user/);
    const user = await lookupJobUser('dstack-job', passwd);
    expect(asJobUser({ PATH: '/bin', HOME: '/root', USER: 'root' }, user)).to.deep.equal({ PATH: '/bin', HOME: '/var/lib/dstack-job', USER: 'dstack-job', LOGNAME: 'dstack-job' });
  });

  it("reaches the agents through the launch template's user-data only when set", () => {
    const text = (role: string): string =>
      agentUserData(parseConfig(`backend: aws\naws:\n  bucket: b-dstack\n${role}`, 'test', '/tmp/unused'), 'p1');
    expect(parse(text('  jobInstanceRole: true\n'))).to.have.nested.property('aws.jobInstanceRole', true);
    expect(parse(text(''))).to.not.have.nested.property('aws.jobInstanceRole');
    const agent = parseConfig(text('  jobInstanceRole: true\n'), 'EC2 user-data', '/tmp/unused');
    expect(agent.aws?.jobInstanceRole).to.equal(true);
  });

  describe('as root (the agent on the image)', function () {
    let nobody: JobUser;
    before(async function () {
      if (process.getuid?.() !== 0) {
        if (process.env.CI) throw new Error('these tests need root, as CI runs them');
        this.skip();
      }
      nobody = await lookupJobUser('nobody');
    });
    beforeEach(() => chmodSync(dir, 0o711));

    it('runs the job as the job user, in a folder it owns, with its HOME', async () => {
      const store = new LocalStore(join(dir, 'store'));
      const attempt = new Attempt({
        store,
        spec: spec(['id -un', 'echo "$HOME"', 'touch mine && stat -c %U mine', 'stat -c %U "$PWD"']),
        attempt: 1,
        jobDir: join(dir, 'work', 'job'),
        jobEnv: asJobUser({ PATH: '/usr/bin:/bin', HOME: '/root' }, nobody),
        venvRoot: join(dir, 'venvs'),
        stopGraceMs: 1000,
        tickMs: 100,
        artifactSyncMs: 60_000,
        signal: new AbortController().signal,
        log: jsonLogger(() => undefined, { agentId: 't' }),
        jobUser: nobody,
      });
      const result = await attempt.run();
      expect(result).to.nested.include({ outcome: 'ended', 'final.status': 'done' });
      const chunks = await store.list(runKeys.logs('local/t', 'run-1'));
      const records = (await Promise.all(chunks.map(async (c) => parseLogChunk((await store.get(c.key)) ?? Buffer.alloc(0)).records))).flat();
      const out = Buffer.concat(records.filter((r) => r.s === 'out').map((r) => r.d)).toString();
      expect(out).to.equal(`nobody\n${nobody.home}\nnobody\nnobody\n`);
    });

    it("pip for `requirements` runs as the job user too (a package's build code is the job's code)", async () => {
      const python = join(dir, 'python3');
      writeFileSync(python, FAKE_PYTHON, { mode: 0o755 });
      const cwd = join(dir, 'code');
      mkdirSync(cwd, { mode: 0o755 });
      writeFileSync(join(cwd, 'requirements.txt'), 'numpy\n');
      const jobDir = join(dir, 'job');
      mkdirSync(jobDir);
      const venv = await requirementsEnv({
        interpreter: python,
        requirements: 'requirements.txt',
        cwd,
        venvRoot: join(dir, 'venvs'),
        jobDir,
        env: { PATH: '/usr/bin:/bin' },
        say: () => undefined,
        user: nobody,
      });
      expect(readFileSync(join(venv.dir, 'venv-uid'), 'utf8').trim()).to.equal(String(nobody.uid));
      expect(readFileSync(join(venv.dir, 'pip-uid'), 'utf8').trim()).to.equal(String(nobody.uid));

      // A package whose build plants a link where the agent (root) writes the venv's marker: refused, nothing written through it.
      const victim = join(dir, 'root-file');
      writeFileSync(victim, 'untouched');
      writeFileSync(join(cwd, 'plant'), victim);
      writeFileSync(join(cwd, 'requirements.txt'), 'evil\n');
      const planted = await requirementsEnv({ interpreter: python, requirements: 'requirements.txt', cwd, venvRoot: join(dir, 'venvs'), jobDir, env: { PATH: '/usr/bin:/bin' }, say: () => undefined, user: nobody }).catch(
        (e: unknown) => e,
      );
      expect(planted).to.be.instanceOf(Error);
      expect((planted as NodeJS.ErrnoException).code).to.equal('EEXIST');
      expect(readFileSync(victim, 'utf8')).to.equal('untouched');
    });

    it('gives the job only what the agent made: links are not followed, folders that existed keep their owner', async () => {
      const outside = join(dir, 'outside.txt');
      writeFileSync(outside, 'root only');
      const tree = join(dir, 'tree');
      mkdirSync(join(tree, 'sub'), { recursive: true });
      writeFileSync(join(tree, 'sub', 'f'), 'x');
      symlinkSync(outside, join(tree, 'link'));
      await chownTree(tree, nobody);
      expect(statSync(join(tree, 'sub', 'f')).uid).to.equal(nobody.uid);
      expect(lstatSync(join(tree, 'link')).uid).to.equal(nobody.uid);
      expect(statSync(outside).uid).to.equal(0);

      const existing = join(dir, 'opt');
      mkdirSync(existing);
      expect(await mkdirFor(join(existing, 'envs', 'mine'), nobody)).to.equal(join(existing, 'envs'));
      expect(statSync(existing).uid).to.equal(0);
      expect(statSync(join(existing, 'envs')).uid).to.equal(nobody.uid);
      expect(statSync(join(existing, 'envs', 'mine')).uid).to.equal(nobody.uid);
      expect(await mkdirFor(existing, nobody)).to.equal(undefined);
    });
  });
});

/** A stand-in for python3 that answers the agent's probes and notes who ran venv and pip. */
const FAKE_PYTHON = `#!/bin/bash
case "$1 $2" in
  "-c "*executable*) echo "$0" ;;
  "-c "*version_info*) echo 3.11 ;;
  "-c "*) echo "3.11.0 (fake)" ;;
  "-m venv") d="\${*: -1}"; mkdir -p "$d/bin" && cp "$0" "$d/bin/python" && id -u >"$d/venv-uid" ;;
  "-m pip") v="$(dirname "$(dirname "$0")")"; id -u >"$v/pip-uid"; if [ -f plant ]; then ln -s "$(cat plant)" "$v/dstack-venv.json"; fi ;;
  *) exit 2 ;;
esac
`;

function spec(commands: string[]): JobSpec {
  return {
    specVersion: 1,
    repoId: 'local/t',
    runName: 'run-1',
    jobId: 'job1',
    workflow: 'w',
    provider: 'bash',
    commands,
    env: {},
    workingDir: '.',
    artifacts: [],
    deps: [],
    pinnedDeps: [],
    cache: false,
    portCount: 0,
    resources: { interruptible: false, local: false },
    runArgs: [],
    code: { commit: null, branch: null, remoteUrl: null, archiveKey: null, diffKey: null, diffSha256: null, untrackedKey: null, untrackedSha256: null },
    submittedAt: new Date().toISOString(),
  };
}
