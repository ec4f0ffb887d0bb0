import { expect } from 'chai';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { httpGetFollowing } from '../../coordinator/links.js';
import { dstack, filesHolding, makeHome, makeRepo, removeAll, killAgents, spawnCli, waitFor, type CliResult } from '../support/cli.js';
import { freePort } from '../../agent/providers.js';
import { requireTool } from '../support/tools.js';
import { devEnvironmentsYaml } from '../support/corpus.js';

const runName = (r: CliResult): string => /Run ([a-z]+-[a-z]+-\d+)/.exec(r.stdout + r.stderr)?.[1] ?? '';
const linkOf = (r: CliResult): string => /is ready: (http\S+)/.exec(r.stdout)?.[1] ?? '';

/** The body of a GET (no redirects followed), with its status. */
async function get(url: string, cookie?: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { redirect: 'manual', ...(cookie ? { headers: { cookie } } : {}) });
  return { status: res.status, body: await res.text() };
}


/** Processes whose command line mentions `needle`. */
function processesWith(needle: string): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.includes(needle) && Number(pid) !== process.pid) out.push(`${pid} ${cmd}`);
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}



describe('e2e: dev environments on the local backend, real servers', function () {
  this.timeout(120_000);
  let repo = '';
  let home = '';
  afterEach(async () => {
    await killAgents(home);
    removeAll(repo, home);
  });

  it('notebook: `dstack run ide-notebook -d` prints a link that opens the repo; without the token nothing is listed; stop ends it', async function () {
    requireTool(this, 'jupyter-notebook');
    repo = makeRepo({ '.dstack/workflows.yaml': devEnvironmentsYaml(), 'train.py': 'print("hi")\n', 'data/readme.txt': 'x\n' });
    home = makeHome({ maxParallelJobs: 1 });
    const r = await dstack(['run', 'ide-notebook', '-d'], { cwd: repo, home });
    expect(r.code, r.stderr).to.equal(0);
    const link = linkOf(r);
    expect(link).to.match(/^http:\/\/127\.0\.0\.1:\d+\/tree\?token=[A-Za-z0-9_-]{32}$/);
    const run = runName(r);
    const url = new URL(link);
    const token = url.searchParams.get('token') ?? '';
    // Following redirects, the link answers 200; with the token the server lists the repo's files.
    expect(await httpGetFollowing(link)).to.equal(200);
    const listing = await get(`${url.origin}/api/contents?token=${token}`);
    expect(listing.status).to.equal(200);
    const names = (JSON.parse(listing.body) as { content: Array<{ name: string }> }).content.map((c) => c.name).sort();
    expect(names).to.include.members(['train.py', 'data']);
    // Without the token: a login page (after the redirect) and a 403 from the API; no file of the repo named.
    const bare = await get(`${url.origin}/tree`);
    expect(bare.status).to.equal(302);
    const login = await get(new URL(String(await fetch(`${url.origin}/tree`, { redirect: 'follow' }).then((x) => x.url)), url).href);
    expect(login.body).to.match(/[Pp]assword|token/);
    expect(login.body).not.to.include('train.py');
    const api = await get(`${url.origin}/api/contents`);
    expect(api.status).to.equal(403);
    expect(api.body).not.to.include('train.py');
    // ps shows the link; ps --json carries it.
    const ps = await dstack(['ps'], { cwd: repo, home });
    expect(ps.stdout).to.include(link);
    const json = JSON.parse((await dstack(['ps', '--json'], { cwd: repo, home })).stdout) as Array<{ runName: string; links: Array<{ kind: string; url: string }> }>;
    expect(json.find((x) => x.runName === run)?.links).to.deep.include({ kind: 'server', port: Number(url.port), url: link });
    // The token never reaches the stored logs, the records or the queue: only the secret store holds it, and
    // Jupyter's own runtime files in the job's folder (0700, removed when the job ends).
    const holding = filesHolding(join(home, 'local'), token);
    expect(holding.every((f) => f.startsWith('secrets/') || /^work\/[^/]+\/[^/]+\/server\/runtime\//.test(f)), holding.join(', ')).to.equal(true);
    const logs = await dstack(['logs', run], { cwd: repo, home });
    expect(logs.stdout + logs.stderr).to.include('Jupyter Notebook');
    expect(logs.stdout + logs.stderr).not.to.include(token);
    // stop ends it: the run is Stopped, the port closes and no process of the server is left.
    const stop = await dstack(['stop', '-y', run], { cwd: repo, home });
    expect(stop.code, stop.stderr).to.equal(0);
    await waitFor(async () => ((await dstack(['ps', run], { cwd: repo, home })).stdout.includes('Stopped') ? true : undefined), 30_000, 'the run to be stopped');
    expect(await httpGetFollowing(link, 1000)).to.equal(0);
    expect(processesWith(`--port=${url.port}`)).to.deep.equal([]);
    expect(filesHolding(join(home, 'local'), token).filter((f) => !f.startsWith('secrets/'))).to.deep.equal([]);
  });

  it('code: `dstack run ide-code -d` prints a link to the workbench; without the token the proxy answers 401', async function () {
    const codeServer = requireTool(this, 'code-server');
    repo = makeRepo({ '.dstack/workflows.yaml': devEnvironmentsYaml(), 'train.py': 'print("hi")\n' });
    home = makeHome({ maxParallelJobs: 1, codeServer });
    const r = await dstack(['run', 'ide-code', '-d'], { cwd: repo, home, timeoutMs: 90_000 });
    expect(r.code, r.stderr).to.equal(0);
    const link = linkOf(r);
    expect(link).to.match(/^http:\/\/127\.0\.0\.1:\d+\/\?dstack-token=[A-Za-z0-9_-]{32}$/);
    const url = new URL(link);
    // The token sets a cookie and redirects; with it the workbench page answers.
    const first = await get(link);
    expect(first.status).to.equal(302);
    const cookie = (await fetch(link, { redirect: 'manual' })).headers.get('set-cookie')?.split(';')[0] ?? '';
    expect(cookie).to.match(new RegExp(`^dstack-session-${url.port}=`));
    expect(cookie).not.to.include(url.searchParams.get('dstack-token') ?? '-');
    expect(await httpGetFollowing(link)).to.equal(200);
    const page = await fetch(`${url.origin}/`, { headers: { cookie } });
    expect(page.status).to.be.oneOf([200, 302]);
    // Without it: 401 everywhere, the workbench's own paths included, and no file of the repo.
    for (const path of ['/', '/?folder=/', '/healthz', '/static/out/vs/code/browser/workbench/workbench.html']) {
      const bare = await get(`${url.origin}${path}`);
      expect(bare.status, path).to.equal(401);
      expect(bare.body).not.to.include('train.py');
    }
    const wrong = await get(`${url.origin}/?dstack-token=${'x'.repeat(32)}`);
    expect(wrong.status).to.equal(401);
    const run = runName(r);
    expect((await dstack(['stop', '-y', run], { cwd: repo, home })).code).to.equal(0);
    await waitFor(async () => ((await dstack(['ps', run], { cwd: repo, home })).stdout.includes('Stopped') ? true : undefined), 30_000, 'the run to be stopped');
    await waitFor(() => (processesWith(join(home, 'local', 'work')).length === 0 ? true : undefined), 10_000, 'code-server to exit');
  });

  it('idle_duration: a notebook with no connection stops itself with the reason', async function () {
    requireTool(this, 'jupyter-notebook');
    repo = makeRepo({ '.dstack/workflows.yaml': 'workflows:\n  - name: nb\n    provider: notebook\n    idle_duration: 3s\n' });
    home = makeHome({ maxParallelJobs: 1 });
    const r = await dstack(['run', 'nb'], { cwd: repo, home, timeoutMs: 60_000 });
    expect(r.stdout).to.match(/Jupyter Notebook of run \S+ is ready: http/);
    expect(r.stderr).to.include('stopped after 3s with no connection to the dev environment (idle_duration)');
    const ps = await dstack(['ps', '-a'], { cwd: repo, home });
    expect(ps.stdout).to.match(/Stopped .*stopped after 3s with no connection/);
  });
});

describe('e2e: ports and max_duration (any workflow)', function () {
  this.timeout(90_000);
  let repo = '';
  let home = '';
  afterEach(async () => {
    await killAgents(home);
    removeAll(repo, home);
  });

  it('`ports: [P]` gives exactly P as $PORT_0, and run prints its link once it accepts connections', async () => {
    const port = await freePort();
    repo = makeRepo({
      '.dstack/workflows.yaml': `workflows:\n  - name: web\n    provider: bash\n    ports: [${port}]\n    commands:\n      - echo "port=$PORT_0"\n      - python3 -m http.server "$PORT_0" --bind 127.0.0.1 & sleep 3; kill %1\n`,
    });
    home = makeHome({ maxParallelJobs: 1 });
    const r = await dstack(['run', 'web'], { cwd: repo, home });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.include(`port=${port}`);
    expect(r.stdout).to.match(new RegExp(`Port ${port} of run \\S+: http://127\\.0\\.0\\.1:${port}\\n`));
  });

  it('after Ctrl-C, `dstack attach RUN` from another terminal prints the output and the link again; a finished run is refused in one line', async () => {
    repo = makeRepo({
      '.dstack/workflows.yaml': 'workflows:\n  - name: web\n    provider: bash\n    ports: 1\n    commands:\n      - echo "serving"\n      - exec python3 -m http.server "$PORT_0" --bind 127.0.0.1\n',
    });
    home = makeHome({ maxParallelJobs: 1 });
    const first = spawnCli(['run', 'web'], { cwd: repo, home });
    const link = await waitFor(() => /Port \d+ of run \S+: (http:\S+)/.exec(first.out.stdout)?.[1], 30_000, 'the port link');
    first.child.kill('SIGINT');
    expect(await first.exited).to.equal(130);
    expect(first.out.stderr).to.match(/Reattach with `dstack attach [a-z]+-[a-z]+-\d+`/);
    const run = runName({ code: 0, stdout: first.out.stdout, stderr: first.out.stderr });
    const again = spawnCli(['attach', run], { cwd: repo, home });
    await waitFor(() => (again.out.stdout.includes(`of run ${run}: ${link}`) ? true : undefined), 30_000, 'the link again');
    expect(again.out.stdout).to.include('serving');
    expect((await fetch(link)).status).to.equal(200);
    await dstack(['stop', '-y', run], { cwd: repo, home });
    expect(await again.exited).to.not.equal(0);
    const ended = await dstack(['attach', run], { cwd: repo, home });
    expect(ended.code).to.equal(2);
    expect(ended.stderr.trim().split('\n')).to.have.length(1);
    expect(ended.stderr).to.include(`run ${run} has ended (stopped: stopped by the user): \`dstack logs ${run}\` shows its output`);
  });

  it('`ports: [P]` with P taken on the machine fails the attempt with one line naming the port', async () => {
    const taken = createServer();
    await new Promise<void>((res) => taken.listen(0, '127.0.0.1', () => res()));
    const port = (taken.address() as { port: number }).port;
    try {
      repo = makeRepo({ '.dstack/workflows.yaml': `workflows:\n  - name: web\n    provider: bash\n    ports: [${port}]\n    commands: [echo never]\n` });
      home = makeHome({ maxParallelJobs: 1 });
      const r = await dstack(['run', 'web'], { cwd: repo, home });
      expect(r.code).to.not.equal(0);
      expect(r.stdout).not.to.include('never');
      expect(r.stderr).to.include(`port ${port} of \`ports\` is taken on this machine: stop what listens on it, or use \`ports: 1\``);
    } finally {
      taken.close();
    }
  });

  it('max_duration stops a run that runs longer, with the reason, and its artifacts are saved', async () => {
    repo = makeRepo({
      '.dstack/workflows.yaml': 'workflows:\n  - name: long\n    provider: bash\n    max_duration: 2s\n    commands:\n      - mkdir -p out && echo saved > out/a.txt\n      - sleep 60\n    artifacts: [out]\n',
    });
    home = makeHome({ maxParallelJobs: 1 });
    const started = Date.now();
    const r = await dstack(['run', 'long'], { cwd: repo, home });
    expect(Date.now() - started).to.be.below(30_000);
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.include('stopped after running longer than 2s (max_duration)');
    const run = runName(r);
    const list = await dstack(['artifacts', 'list', run], { cwd: repo, home });
    expect(list.stdout).to.match(/^out\s+1\s/m);
  });
});
