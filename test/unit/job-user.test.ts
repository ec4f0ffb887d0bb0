import { expect } from 'chai';
import { bashSpec } from '../support/job-spec.js';
import { spawnSync } from 'node:child_process';
import { chmodSync, lchownSync, lstatSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { Attempt, type AttemptResult } from '../../agent/attempt.js';
import { agentFolders, asJobUser, chownTree, jobUserFor, lookupJobUser, type JobUser } from '../../agent/job-user.js';
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
import { makeThrowawayUser, removeThrowawayUser } from '../support/job-user.js';

const PASSWD = 'root:x:0:0:root:/root:/bin/bash\ndstack-job:x:998:997::/var/lib/dstack-job:/bin/bash\nbroken:x:99x:997::/:/bin/sh\n';

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
    const broken = await lookupJobUser('broken', passwd).catch((e: unknown) => e);
    expect(broken).to.be.instanceOf(ConfigError);
    expect((broken as Error).message).to.equal(`DSTACK_JOB_USER=broken: the entry for broken in ${passwd} is malformed (its uid or gid is not a number)`);
    expect(((await lookupJobUser('root', passwd).catch((e: unknown) => e)) as Error).message).to.match(/is root: jobs must run as an unprivileged user/);
  });

  it('aws.jobInstanceRole: true (or no DSTACK_JOB_USER) runs jobs as the agent user; the job user gets its own HOME', async () => {
    expect(await jobUserFor('dstack-job', false, 0, passwd)).to.include({ uid: 998 });
    expect(await jobUserFor('dstack-job', true, 0, passwd)).to.equal(undefined);
    expect(await jobUserFor(undefined, false, 0, passwd)).to.equal(undefined);
    const notRoot = await jobUserFor('dstack-job', false, 1000, passwd).catch((e: unknown) => e);
    expect(notRoot).to.be.instanceOf(ConfigError);
    expect((notRoot as Error).message).to.match(/the agent runs as uid 1000, and only root can start jobs as another user/);
    // The agent's own user: its jobs run as the agent does. Taken as a job user, the end of every job
    // (kill -KILL -1 as that user) would kill the agent itself.
    expect(await jobUserFor('dstack-job', false, 998, passwd)).to.equal(undefined);
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
    // A user of this test's own: the agent kills every process of its job user when a job ends.
    let testUser: JobUser;
    let made: string | undefined;
    before(async function () {
      const user = makeThrowawayUser();
      if ('why' in user) {
        if (process.env.CI) throw new Error(`these tests need ${user.why}, as CI has`);
        this.skip();
      }
      made = user.name;
      testUser = await lookupJobUser(user.name);
    });
    after(() => {
      if (made) removeThrowawayUser(made);
    });
    beforeEach(() => chmodSync(dir, 0o711));

    /** Runs one attempt of `s` as the test user; its outcome and its stdout. */
    async function runAs(s: JobSpec, attempt = 1): Promise<{ result: AttemptResult; out: string; err: string }> {
      const store = new LocalStore(join(dir, 'store'));
      const result = await new Attempt({
        store,
        spec: s,
        attempt,
        jobDir: join(dir, 'work', `job-${attempt}`),
        jobEnv: asJobUser({ PATH: '/usr/bin:/bin', HOME: '/root' }, testUser),
        venvRoot: join(dir, 'venvs'),
        stopGraceMs: 1000,
        tickMs: 100,
        artifactSyncMs: 60_000,
        signal: new AbortController().signal,
        log: jsonLogger(() => undefined, { agentId: 't' }),
        jobUser: testUser,
      }).run();
      const chunks = await store.list(runKeys.logs('local/t', 'run-1'));
      const records = (await Promise.all(chunks.map(async (c) => parseLogChunk((await store.get(c.key)) ?? Buffer.alloc(0)).records))).flat();
      const text = (stream: string): string => Buffer.concat(records.filter((r) => r.s === stream).map((r) => r.d)).toString();
      return { result, out: text('out'), err: text('err') };
    }

    it('runs the job as the job user, in a folder it owns, with its HOME', async () => {
      const { result, out } = await runAs(spec(['id -un', 'echo "$HOME"', 'touch mine && stat -c %U mine', 'stat -c %U "$PWD"']));
      expect(result).to.nested.include({ outcome: 'ended', 'final.status': 'done' });
      expect(out).to.equal(`${testUser.name}\n${testUser.home}\n${testUser.name}\n${testUser.name}\n`);
    });

    it('leaves no process of the job user behind when the job ends, not even one in a session of its own (setsid)', async () => {
      // One daemon holds the job's stdout open, the other does not.
      const { result } = await runAs(spec(['setsid sleep 600 &', 'setsid sleep 601 >/dev/null 2>&1 </dev/null &', 'echo started']));
      expect(result).to.nested.include({ outcome: 'ended', 'final.status': 'done' });
      expect(processesOf(testUser.uid)).to.deep.equal([]);
    });

    it('a checkpoint restored into an absolute artifact folder that already exists is the job user\'s to overwrite', async () => {
      const ckpt = join(dir, 'ckpt');
      // Overwritten in place, as a training script saves its checkpoint.
      const s = { ...spec([`cd ${ckpt}`, 'v=$(cat ckpt 2>/dev/null || true); echo "$v+1" > ckpt', 'mkdir -p sub && echo state > sub/state', 'cat ckpt']), artifacts: [{ path: ckpt, mount: false }] };
      const first = await runAs(s, 1);
      expect(first.result, first.err).to.nested.include({ outcome: 'ended', 'final.status': 'done' });
      expect(first.out).to.equal('+1\n');
      // Attempt 2 runs where the folder is there (an earlier job made it) but the files are not.
      for (const name of ['ckpt', 'sub']) rmSync(join(ckpt, name), { recursive: true });
      const second = await runAs({ ...s, commands: [...s.commands, 'echo again > sub/state'] }, 2);
      expect(second.out).to.equal('+1\n+1+1\n');
      expect(second.result, second.err).to.nested.include({ outcome: 'ended', 'final.status': 'done' });
      expect(statSync(join(ckpt, 'sub', 'state')).uid).to.equal(testUser.uid);
      expect(statSync(ckpt).uid).to.equal(testUser.uid);
    });

    it('restores nothing through a link an earlier job left at an absolute artifact path', async () => {
      const ckpt = join(dir, 'ckpt');
      const s = { ...spec([`cd ${ckpt}`, 'echo saved > ckpt']), artifacts: [{ path: ckpt, mount: false }] };
      expect((await runAs(s, 1)).result).to.nested.include({ outcome: 'ended', 'final.status': 'done' });
      // An earlier job (as the job user) swapped the folder for a link to one of root's folders.
      const outside = join(dir, 'root-only');
      mkdirSync(outside);
      rmSync(ckpt, { recursive: true });
      symlinkSync(outside, ckpt);
      lchownSync(ckpt, testUser.uid, testUser.gid);
      const second = await runAs(s, 2);
      expect(second.result).to.nested.include({ outcome: 'ended', 'final.status': 'failed' });
      expect(second.err).to.include(`the artifact path ${ckpt} goes through a link that is not root's (${ckpt}): remove it`);
      expect(readdirSync(outside)).to.deep.equal([]);
    });

    it('keeps the folders of DSTACK_HOME unlistable by the job user, and its job folder reachable', async () => {
      const root = join(dir, 'local');
      const workRoot = join(root, 'work', 'agent-1');
      await agentFolders(root, workRoot, join(root, 'venvs'));
      const jobDir = join(workRoot, 'job');
      mkdirSync(jobDir);
      writeFileSync(join(jobDir, 'f'), 'mine');
      await chownTree(jobDir, testUser);
      const as = (cmd: string): number | null => spawnSync('bash', ['-c', cmd], { uid: testUser.uid, gid: testUser.gid, stdio: 'ignore' }).status;
      expect(as(`cat ${join(jobDir, 'f')}`)).to.equal(0);
      for (const listed of [root, join(root, 'work'), workRoot, join(root, 'venvs'), join(root, 'agents'), join(root, 'logs')]) {
        expect(as(`ls ${listed}`), `${listed} is listable by the job user`).to.not.equal(0);
      }
      for (const hidden of [join(root, 'agents'), join(root, 'logs')]) expect(statSync(hidden).mode & 0o777).to.equal(0o700);
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
        user: testUser,
      });
      expect(readFileSync(join(venv.dir, 'venv-uid'), 'utf8').trim()).to.equal(String(testUser.uid));
      expect(readFileSync(join(venv.dir, 'pip-uid'), 'utf8').trim()).to.equal(String(testUser.uid));
      // Published to later jobs only once it is root's and no one else may write in it.
      const writable: string[] = [];
      const walk = (p: string): void => {
        const st = lstatSync(p);
        if (st.uid !== 0 || (!st.isSymbolicLink() && (st.mode & 0o022) !== 0)) writable.push(`${p} uid ${st.uid} mode ${(st.mode & 0o7777).toString(8)}`);
        if (st.isDirectory()) for (const n of readdirSync(p)) walk(join(p, n));
      };
      walk(venv.dir);
      expect(writable).to.deep.equal([]);
      expect(processesOf(testUser.uid), 'what pip left running').to.deep.equal([]);
      expect(spawnSync('touch', [join(venv.dir, 'bin', 'python'), join(venv.dir, 'bin', 'new')], { uid: testUser.uid, gid: testUser.gid }).status).to.not.equal(0);

      // A package whose build plants a link where the agent (root) writes the venv's marker: refused, nothing written through it.
      const victim = join(dir, 'root-file');
      writeFileSync(victim, 'untouched');
      writeFileSync(join(cwd, 'plant'), victim);
      writeFileSync(join(cwd, 'requirements.txt'), 'evil\n');
      const planted = await requirementsEnv({ interpreter: python, requirements: 'requirements.txt', cwd, venvRoot: join(dir, 'venvs'), jobDir, env: { PATH: '/usr/bin:/bin' }, say: () => undefined, user: testUser }).catch(
        (e: unknown) => e,
      );
      expect(planted).to.be.instanceOf(Error);
      expect((planted as NodeJS.ErrnoException).code).to.equal('EEXIST');
      expect(readFileSync(victim, 'utf8')).to.equal('untouched');
    });

    it('gives the job only what the agent made: links are not followed', async () => {
      const outside = join(dir, 'outside.txt');
      writeFileSync(outside, 'root only');
      const tree = join(dir, 'tree');
      mkdirSync(join(tree, 'sub'), { recursive: true });
      writeFileSync(join(tree, 'sub', 'f'), 'x');
      symlinkSync(outside, join(tree, 'link'));
      await chownTree(tree, testUser);
      expect(statSync(join(tree, 'sub', 'f')).uid).to.equal(testUser.uid);
      expect(lstatSync(join(tree, 'link')).uid).to.equal(testUser.uid);
      expect(statSync(outside).uid).to.equal(0);

    });
  });
});

/** The live (not zombie) processes whose real or effective uid is `uid`, read from /proc. */
function processesOf(uid: number): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    let status: string;
    try {
      status = readFileSync(`/proc/${pid}/status`, 'utf8');
    } catch {
      continue;
    }
    const uids = /^Uid:\s+(\d+)\s+(\d+)/m.exec(status);
    const state = /^State:\s+(\S)/m.exec(status)?.[1];
    if (uids && (Number(uids[1]) === uid || Number(uids[2]) === uid) && state !== 'Z' && state !== 'X') found.push(`${pid} ${/^Name:\s+(.*)$/m.exec(status)?.[1] ?? '?'}`);
  }
  return found;
}

/** A stand-in for python3 that answers the agent's probes and notes who ran venv and pip. */
const FAKE_PYTHON = `#!/bin/bash
case "$1 $2" in
  "-c "*executable*) echo "$0" ;;
  "-c "*version_info*) echo 3.11 ;;
  "-c "*) echo "3.11.0 (fake)" ;;
  "-m venv") d="\${*: -1}"; mkdir -p "$d/bin" && cp "$0" "$d/bin/python" && id -u >"$d/venv-uid" ;;
  "-m pip") v="$(dirname "$(dirname "$0")")"; id -u >"$v/pip-uid"; install -m 0666 /dev/null "$v/open-file"; setsid sleep 600 >/dev/null 2>&1 </dev/null & if [ -f plant ]; then ln -s "$(cat plant)" "$v/dstack-venv.json"; fi ;;
  *) exit 2 ;;
esac
`;

function spec(commands: string[]): JobSpec {
  return bashSpec(commands, { repoId: 'local/t' });
}
