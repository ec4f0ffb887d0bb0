import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONDA_MARKER, condaShellHook, findPython, locatePython } from '../../agent/python-find.js';
import { JobFailedError } from '../../common/errors.js';
import { HOST_PYTHON, fakeConda, makeFakeEnv } from '../support/fake-conda.js';
import { removeAll, tempDir, waitFor } from '../support/cli.js';

describe('python-find: where `python: X.Y` comes from', function () {
  this.timeout(30_000);
  let dir: string;
  let condaRoot: string;
  let imageEnvs: string;
  let said: string;
  const say = (d: Buffer | string): void => void (said += d.toString());
  beforeEach(() => {
    dir = tempDir('python-find');
    condaRoot = join(dir, 'cache', 'conda');
    imageEnvs = join(dir, 'opt-conda-envs');
    said = '';
  });
  afterEach(() => removeAll(dir));
  // The fake conda runs mkdir, cat and chmod: the system's folders follow it on PATH (none has a python3.4…3.10 here).
  const withConda = (c: { bin: string }): string => `${c.bin}:/usr/bin:/bin`;

  /** A folder holding only `python<version>`, a link to the host's python3. */
  const hostPythonOnPath = (): { bin: string; version: string } => {
    const bin = join(dir, 'host-bin');
    mkdirSync(bin, { recursive: true });
    const version = execFileSync(HOST_PYTHON, ['-c', 'import sys; print("%d.%d" % sys.version_info[:2])'], { encoding: 'utf8' }).trim();
    symlinkSync(HOST_PYTHON, join(bin, `python${version}`));
    return { bin, version };
  };

  it('creates X.Y once with the conda on PATH, in the agent cache, its output in the job log; a later job reuses it', async () => {
    const conda = fakeConda(join(dir, 'conda'));
    const prefix = join(condaRoot, 'py3.7');
    const python = await findPython('3.7', withConda(conda), { condaRoot, imageEnvs, say, env: { PATH: withConda(conda), HOME: join(dir, 'job-user-home') } });
    expect(python).to.equal(join(prefix, 'bin', 'python'));
    expect(conda.calls()).to.deep.equal([`create --prefix ${prefix} python=3.7 --yes --quiet`]);
    // Not the job's HOME (on the image, the job user's): one of the agent's, in its cache.
    expect(conda.homes()).to.deep.equal([join(condaRoot, '.home')]);
    expect(said).to.equal(`dstack: creating a Conda env for Python 3.7 in ${prefix} (once: later jobs reuse it)\nfake conda: created ${prefix} with Python 3.7\n`);
    expect(readdirSync(prefix)).to.include(CONDA_MARKER);

    said = '';
    expect(await findPython('3.7.16', withConda(conda), { condaRoot, imageEnvs, say })).to.equal(python);
    expect(conda.calls()).to.have.length(1);
    expect(said).to.equal('');
  });

  it('two agents asking at once: one creates, the other waits for it and uses the same env', async () => {
    const conda = fakeConda(join(dir, 'conda'), { gate: true });
    let saidA = '';
    let saidB = '';
    const a = findPython('3.8', withConda(conda), { condaRoot, imageEnvs, say: (d) => void (saidA += d.toString()) });
    const b = findPython('3.8', withConda(conda), { condaRoot, imageEnvs, say: (d) => void (saidB += d.toString()) });
    // conda has started in one, and the other has seen the lock: only then may conda finish.
    await waitFor(() => (conda.calls().length === 1 && /waiting for another job/.test(saidA + saidB) ? true : undefined), 20_000, 'one conda create and one waiter');
    conda.open();
    const [pa, pb] = await Promise.all([a, b]);
    expect(pa).to.equal(join(condaRoot, 'py3.8', 'bin', 'python'));
    expect(pb).to.equal(pa);
    expect(conda.calls()).to.have.length(1);
    const waiter = /waiting/.test(saidA) ? saidA : saidB;
    expect(waiter).to.equal(`dstack: waiting for another job to finish creating the Conda env for Python 3.8 (${join(condaRoot, 'py3.8')})\ndstack: using the Conda env for Python 3.8 another job created\n`);
  });

  it('a job waiting for another job\'s conda create that is stopped rejects with the stop\'s own reason', async () => {
    const conda = fakeConda(join(dir, 'conda'), { gate: true });
    const creator = findPython('3.6', withConda(conda), { condaRoot, imageEnvs, say: () => undefined });
    await waitFor(() => (conda.calls().length === 1 ? true : undefined), 10_000, 'conda create to start');
    const stop = new AbortController();
    let waited = '';
    const waiter = findPython('3.6', withConda(conda), { condaRoot, imageEnvs, say: (d) => void (waited += d.toString()), signal: stop.signal }).then(
      () => 'resolved',
      (e: unknown) => e,
    );
    await waitFor(() => (/waiting for another job/.test(waited) ? true : undefined), 10_000, 'the waiter');
    const reason = new Error('stopped by the user');
    stop.abort(reason);
    // The attempt tells a stop (or a forced stop) from a failure by this reason: a generic AbortError would fail the run.
    expect(await waiter).to.equal(reason);
    conda.open();
    await creator;
  });

  it('an env a creator left half-made (no mark) is never used: it is made again', async () => {
    const conda = fakeConda(join(dir, 'conda'));
    makeFakeEnv(join(condaRoot, 'py3.9'), '3.9');
    expect(await findPython('3.9', withConda(conda), { condaRoot, imageEnvs, say })).to.equal(join(condaRoot, 'py3.9', 'bin', 'python'));
    expect(conda.calls()).to.have.length(1);
    expect(existsSync(join(condaRoot, 'py3.9', CONDA_MARKER))).to.equal(true);
  });

  it('a failed conda create fails the job with one line and leaves nothing behind; the next job tries again', async () => {
    const failing = fakeConda(join(dir, 'conda'), { fail: true });
    const err = await findPython('3.10', withConda(failing), { condaRoot, imageEnvs, say }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(JobFailedError);
    expect((err as Error).message).to.equal(`\`conda create --prefix ${join(condaRoot, 'py3.10')} python=3.10\` exited with code 1: see its output above`);
    expect(said).to.include('CondaHTTPError');
    expect(existsSync(join(condaRoot, 'py3.10'))).to.equal(false);
    const working = fakeConda(join(dir, 'conda2'));
    expect(await findPython('3.10', withConda(working), { condaRoot, imageEnvs, say })).to.equal(join(condaRoot, 'py3.10', 'bin', 'python'));
  });

  it('order: the image env first, then the conda cache (even over pythonX.Y on PATH), then pythonX.Y on PATH', async () => {
    const conda = fakeConda(join(dir, 'conda'));
    const host = hostPythonOnPath();
    const path = `${withConda(conda)}:${host.bin}`;
    // 1. The image's env wins over everything: conda is not run.
    makeFakeEnv(join(imageEnvs, `py${host.version}`), host.version);
    expect(await findPython(host.version, path, { condaRoot, imageEnvs, say })).to.equal(join(imageEnvs, `py${host.version}`, 'bin', 'python'));
    expect(conda.calls()).to.deep.equal([]);
    // 2. Without it, conda makes X.Y although python X.Y is on PATH.
    const noImage = join(dir, 'no-image');
    expect(await findPython(host.version, path, { condaRoot, imageEnvs: noImage, say })).to.equal(join(condaRoot, `py${host.version}`, 'bin', 'python'));
    expect(conda.calls()).to.have.length(1);
    // 3. Without conda and the cache: python X.Y from PATH.
    expect(await findPython(host.version, host.bin, { condaRoot: join(dir, 'other-cache'), imageEnvs: noImage, say })).to.equal(join(host.bin, `python${host.version}`));
  });

  it('at submit: conda on PATH counts (the agent will make the env); without it and without an interpreter, nothing does', async () => {
    const conda = fakeConda(join(dir, 'conda'));
    expect(await locatePython('3.4', { path: conda.bin, condaRoot, imageEnvs })).to.deep.equal({ kind: 'create', conda: join(conda.bin, 'conda'), prefix: join(condaRoot, 'py3.4') });
    // 3.4: a version no ~/.pyenv of a developer's has.
    expect(await locatePython('3.4', { path: join(dir, 'empty'), condaRoot, imageEnvs })).to.equal(undefined);
    expect(conda.calls()).to.deep.equal([]);
  });

  it('conda\'s shell hook, first in a job\'s script, makes `conda activate ENV` work in a non-interactive bash', async () => {
    const conda = fakeConda(join(dir, 'conda'));
    const path = withConda(conda);
    const hook = await condaShellHook(path);
    expect(hook).to.equal(`eval "$('${join(conda.bin, 'conda')}' shell.bash hook 2>/dev/null)"`);
    const script = (lines: string[]): { status: number | null; out: string } => {
      writeFileSync(join(dir, 'run.sh'), ['set -e', ...lines, ''].join('\n'));
      const r = spawnSync('bash', [join(dir, 'run.sh')], { env: { PATH: path }, encoding: 'utf8' });
      return { status: r.status, out: r.stdout + r.stderr };
    };
    expect(script([hook ?? '', 'conda activate myenv'])).to.deep.equal({ status: 0, out: 'fake conda: activated myenv\n' });
    // Without it, as with a real conda: the job fails at `conda activate`.
    expect(script(['conda activate myenv']).status).to.equal(1);
    expect(await condaShellHook(join(dir, 'empty'))).to.equal(undefined);
  });

  it('an attempt aborted during conda create kills it and frees the lock: the next job makes the env at once', async () => {
    const gated = fakeConda(join(dir, 'conda'), { gate: true });
    const abort = new AbortController();
    const first = findPython('3.9', withConda(gated), { condaRoot, imageEnvs, say, signal: abort.signal }).then(
      () => 'resolved',
      (e: unknown) => e,
    );
    await waitFor(() => (gated.calls().length === 1 ? true : undefined), 10_000, 'conda create to start');
    abort.abort(new Error('lease lost'));
    expect(((await first) as Error).message).to.equal('lease lost');
    expect(existsSync(join(condaRoot, 'py3.9.lock'))).to.equal(false);
    const working = fakeConda(join(dir, 'conda2'));
    said = '';
    expect(await findPython('3.9', withConda(working), { condaRoot, imageEnvs, say })).to.equal(join(condaRoot, 'py3.9', 'bin', 'python'));
    expect(said).to.not.include('waiting');
  });
});
