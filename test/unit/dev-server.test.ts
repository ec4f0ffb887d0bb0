import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { establishedTo } from '../../agent/connections.js';
import { CodeAuthProxy, planServer, probeOnce } from '../../agent/server.js';
import { formatSeconds } from '../../agent/service.js';
import { SpecError } from '../../common/errors.js';
import { buildJobSpec } from '../../common/spec/job-spec.js';
import { durationSeconds, WorkflowSchema } from '../../common/spec/schema.js';
import { JobSpecSchema } from '../../common/records/job-spec.js';

const base = { cwd: '/work/repo', port: 8888, token: 'T'.repeat(32), jobDir: '/jobs/j1/server' };

describe('dev environments: the server command lines', () => {
  it('lab: jupyter-lab on 127.0.0.1 at the agent\'s port, in the repo, token from JUPYTER_TOKEN (never the command line)', () => {
    const plan = planServer({ ...base, provider: 'lab', binary: '/opt/conda/bin/jupyter-lab' });
    expect(plan.command).to.equal(
      "exec /opt/conda/bin/jupyter-lab --no-browser --ip=127.0.0.1 --port=8888 --port-retries=0 --ServerApp.root_dir=/work/repo --allow-root",
    );
    expect(plan.env).to.deep.equal({ JUPYTER_TOKEN: base.token });
    expect(plan.command).not.to.include(base.token);
    expect({ path: plan.path, tokenParam: plan.tokenParam, probe: plan.probe }).to.deep.equal({ path: '/lab', tokenParam: 'token', probe: { port: 8888, path: '/api' } });
  });

  it('notebook: the classic Notebook, its tree as the link', () => {
    const plan = planServer({ ...base, provider: 'notebook', binary: '/usr/bin/jupyter-notebook', cwd: "/work/it's" });
    expect(plan.command).to.equal(
      "exec /usr/bin/jupyter-notebook --no-browser --ip=127.0.0.1 --port=8888 --port-retries=0 --NotebookApp.notebook_dir='/work/it'\\''s' --allow-root",
    );
    expect(plan.path).to.equal('/tree');
  });

  it('code: code-server without auth on a unix socket in the job folder, behind the proxy on the port', () => {
    const plan = planServer({ ...base, provider: 'code', binary: '/usr/local/bin/code-server' });
    expect(plan.command).to.match(/^exec \/usr\/local\/bin\/code-server --auth none --socket \/jobs\/j1\/server\/code\.sock --socket-mode 600 /);
    expect(plan.command).not.to.include('--bind-addr');
    expect(plan.command).not.to.include(base.token);
    expect(plan.command.endsWith(' /work/repo')).to.equal(true);
    expect(plan.env).to.deep.equal({});
    expect({ socket: plan.socket, tokenParam: plan.tokenParam, probe: plan.probe }).to.deep.equal({
      socket: '/jobs/j1/server/code.sock',
      tokenParam: 'dstack-token',
      probe: { socketPath: '/jobs/j1/server/code.sock', path: '/healthz' },
    });
  });
});

describe('dev environments: the authenticating proxy in front of code-server', () => {
  let dir: string;
  let upstream: Server;
  let proxy: CodeAuthProxy;
  let port: number;
  const token = 'a'.repeat(32);
  const seen: string[] = [];
  const upgraded: Duplex[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'proxy-'));
    const socket = join(dir, 'code.sock');
    upstream = createServer((req, res) => {
      seen.push(req.url ?? '');
      res.end(`upstream ${req.url ?? ''}`);
    });
    upstream.on('upgrade', (_req, sock) => {
      upgraded.push(sock);
      sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      sock.on('data', (d: Buffer) => sock.write(d));
    });
    await new Promise<void>((r) => upstream.listen(socket, () => r()));
    const probe = createServer().listen(0, '127.0.0.1');
    await new Promise((r) => probe.once('listening', r));
    port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    proxy = new CodeAuthProxy(socket, token);
    await proxy.listen(port);
    expect(await probeOnce({ socketPath: socket, path: '/healthz' })).to.equal(200);
  });
  after(async () => {
    await proxy.close();
    for (const sock of upgraded) sock.destroy();
    upstream.closeAllConnections();
    upstream.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Follows the link's first hop: the session cookie it sets (name=value), and where it sends the browser. */
  async function open(link: string): Promise<{ cookie: string; location: string | null }> {
    const res = await fetch(link, { redirect: 'manual' });
    expect(res.status).to.equal(302);
    const set = res.headers.get('set-cookie') ?? '';
    expect(set).to.match(new RegExp(`^dstack-session-${port}=[A-Za-z0-9_-]{32}; HttpOnly; SameSite=Strict; Path=/$`));
    return { cookie: set.split(';')[0] ?? '', location: res.headers.get('location') };
  }

  it('the token in the link sets a session cookie named after the port (never holding the token) and redirects to the same path without it', async () => {
    const { cookie, location } = await open(`http://127.0.0.1:${port}/?folder=/x&dstack-token=${token}`);
    expect(location).to.equal('/?folder=%2Fx');
    expect(cookie).not.to.include(token);
  });

  it('never redirects off the server: `//host` paths fold into one slash', async () => {
    for (const path of ['/.//evil.com/', '//evil.com/', '/%2e//evil.com', '/\\evil.com/']) {
      const { location } = await open(`http://127.0.0.1:${port}${path}?dstack-token=${token}`);
      expect(location, path).to.match(/^\/(?![/\\])/);
    }
  });

  it('passes requests with the cookie, and refuses (401) those without it, with a wrong or stale one, or with the raw token as the cookie, never reaching code-server', async () => {
    const { cookie } = await open(`http://127.0.0.1:${port}/?dstack-token=${token}`);
    seen.length = 0;
    const ok = await fetch(`http://127.0.0.1:${port}/static/x.js`, { headers: { cookie: `other=1; ${cookie}` } });
    expect(ok.status).to.equal(200);
    expect(await ok.text()).to.equal('upstream /static/x.js');
    const wrong = [{}, { cookie: `dstack-session-${port}=${'b'.repeat(32)}` }, { cookie: `dstack-session-${port}=${token}` }, { cookie: `dstack-token=${token}` }, { cookie: cookie.replace(`-${port}=`, `-${port + 1}=`) }];
    for (const headers of wrong as Array<Record<string, string>>) {
      const res = await fetch(`http://127.0.0.1:${port}/static/x.js`, { headers });
      expect(res.status, JSON.stringify(headers)).to.equal(401);
    }
    expect((await fetch(`http://127.0.0.1:${port}/?dstack-token=wrong`, { redirect: 'manual' })).status).to.equal(401);
    expect(seen).to.deep.equal(['/static/x.js']);
  });

  it('a WebSocket upgrade needs the cookie and a page of this origin; with both the bytes flow both ways', async () => {
    const { cookie } = await open(`http://127.0.0.1:${port}/?dstack-token=${token}`);
    const upgrade = (headers: Record<string, string>): Promise<string> =>
      new Promise((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path: '/ws', headers: { connection: 'Upgrade', upgrade: 'websocket', ...headers } });
        req.on('upgrade', (_res, sock) => {
          sock.once('data', (d: Buffer) => {
            resolve(`upgraded ${d.toString()}`);
            sock.destroy();
          });
          sock.write('ping');
        });
        req.on('response', (res) => resolve(`status ${res.statusCode ?? 0}`));
        req.on('error', reject);
        req.end();
      });
    expect(await upgrade({})).to.equal('status 401');
    expect(await upgrade({ cookie, origin: `http://127.0.0.1:${port + 1}` })).to.equal('status 401');
    expect(await upgrade({ cookie, origin: `http://127.0.0.1:${port}` })).to.equal('upgraded ping');
    expect(await upgrade({ cookie })).to.equal('upgraded ping');
  });
});

describe('dev environments: idle connections, durations and the spec', () => {
  it('counts established connections to a port, not the listener', async () => {
    const server = createServer((_q, r) => r.end()).listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const port = (server.address() as AddressInfo).port;
    try {
      expect(await establishedTo([port])).to.equal(0);
      const socket = connect({ host: '127.0.0.1', port });
      await new Promise((r) => socket.once('connect', r));
      // Both ends are on this machine: the server's side has local port `port`.
      expect(await establishedTo([port])).to.equal(1);
      socket.destroy();
    } finally {
      server.close();
    }
  });

  it('reads durations as 30m, 2h, 45s or seconds, and prints them back', () => {
    expect([durationSeconds('30m'), durationSeconds('2h'), durationSeconds('45s'), durationSeconds(90), durationSeconds('1.5h'), durationSeconds('0')]).to.deep.equal([1800, 7200, 45, 90, 5400, 0]);
    expect([formatSeconds(5), formatSeconds(3600), formatSeconds(1800), formatSeconds(90)]).to.deep.equal(['5s', '1h', '30m', '90s']);
    expect(WorkflowSchema.safeParse({ name: 'x', provider: 'bash', max_duration: '10 minutes' }).success).to.equal(false);
    // Up to a year (longer than a timer holds: the agent re-arms it); `0.4` is a second, not `0` (never).
    expect(WorkflowSchema.safeParse({ name: 'x', provider: 'bash', max_duration: '365d' }).success).to.equal(true);
    expect(WorkflowSchema.safeParse({ name: 'x', provider: 'bash', max_duration: '366d' }).success).to.equal(false);
    expect(WorkflowSchema.safeParse({ name: 'x', provider: 'bash', max_duration: Infinity }).success).to.equal(false);
    expect([durationSeconds('0.4'), durationSeconds(0.4)]).to.deep.equal([1, 1]);
  });

  const spec = (workflow: Record<string, unknown>) =>
    buildJobSpec({
      located: { workflow: WorkflowSchema.parse(workflow), file: '.dstack/workflows.yaml', line: 3 },
      repoId: 'r',
      runName: 'a-b-1',
      jobId: 'j',
      args: [],
      shellEnv: {},
      code: { commit: null, branch: null, remoteUrl: null, archiveKey: null, diffKey: null, diffSha256: null, untrackedKey: null, untrackedSha256: null },
      now: new Date(0),
    });

  it('a dev environment idles out after 60m by default, never with 0; max_duration works for any workflow; all is version 4', () => {
    const nb = spec({ name: 'nb', provider: 'notebook' });
    expect({ idle: nb.idleDurationS, v: nb.specVersion }).to.deep.equal({ idle: 3600, v: 4 });
    expect(spec({ name: 'nb', provider: 'notebook', idle_duration: 0 }).idleDurationS).to.equal(undefined);
    const long = spec({ name: 'l', provider: 'bash', commands: ['x'], max_duration: '2h' });
    expect({ max: long.maxDurationS, v: long.specVersion }).to.deep.equal({ max: 7200, v: 4 });
    expect(JobSpecSchema.parse(JSON.parse(JSON.stringify(long))).maxDurationS).to.equal(7200);
    const plain = spec({ name: 'p', provider: 'bash', commands: ['x'], ports: 2 });
    expect({ v: plain.specVersion, fixed: plain.fixedPorts, n: plain.portCount }).to.deep.equal({ v: 1, fixed: undefined, n: 2 });
    expect(spec({ name: 'p', provider: 'bash', commands: ['x'], ports: [8888, 6006] }).fixedPorts).to.deep.equal([8888, 6006]);
  });

  it('refuses idle_duration on a workflow that is not a dev environment, and a port listed twice, naming file and line', () => {
    expect(() => spec({ name: 'b', provider: 'bash', commands: ['x'], idle_duration: '5m' })).to.throw(SpecError, /^\.dstack\/workflows\.yaml:3:5: workflow `b`: `idle_duration` applies to dev environments/);
    expect(() => spec({ name: 'b', provider: 'bash', commands: ['x'], ports: [80, 80] })).to.throw(SpecError, /`ports` lists a port twice/);
  });
});
