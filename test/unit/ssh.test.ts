import { expect } from 'chai';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { Socket, createServer, type AddressInfo, type Server } from 'node:net';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import type { Client } from 'ssh2';
import { AgentSshServer, loadHostKey, loopbackListeners } from '../../agent/ssh-server.js';
import { connectSsh, forwardPort, forwardService, type SshEndpoint } from '../../coordinator/ssh-forward.js';
import { userSshKey } from '../../coordinator/ssh-key.js';
import { sshConfigBlock } from '../../coordinator/commands/ssh.js';
import { configCommand, type ConfigOptions } from '../../coordinator/commands/config.js';
import { captureOutput, coordinatorContext } from '../support/coordinator.js';
import { reachFor } from '../../coordinator/reach.js';
import { parseConfig } from '../../common/config.js';
import { runKeys } from '../../common/runs.js';
import { ExternalAgents } from '../../common/local/local-compute.js';
import { removeAll, tempDir, waitFor } from '../support/cli.js';

/** A TCP server on 127.0.0.1 that answers each line with `echo:LINE`. */
async function echoServer(): Promise<{ server: Server; port: number }> {
  const server = createServer((s) => s.on('data', (d) => s.write(`echo:${d.toString()}`)));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

/** Sends `text` to 127.0.0.1:port and resolves to the first answer. */
function ask(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = new Socket();
    s.once('error', reject);
    s.once('data', (d) => {
      resolve(d.toString());
      s.destroy();
    });
    s.once('close', () => resolve(''));
    s.connect(port, '127.0.0.1', () => s.write(text));
  });
}

/** Runs `command` over an exec channel; resolves to its output and exit code. */
function exec(client: Client, command: string): Promise<{ out: string; code: number | undefined }> {
  return new Promise((resolve, reject) => {
    client.exec(command, (err, ch) => {
      if (err) return reject(err);
      let out = '';
      let code: number | undefined;
      ch.on('data', (d: Buffer) => (out += d.toString()));
      ch.on('exit', (c: number) => (code = c));
      ch.on('close', () => resolve({ out, code }));
    });
  });
}

describe('SSH: the agent\'s endpoint and the CLI\'s forward (ssh2 on both sides)', function () {
  this.timeout(20_000);
  let dir: string;
  let server: AgentSshServer;
  let endpoint: SshEndpoint;
  let echo: { server: Server; port: number };
  let userKey: { privateKey: string; publicKey: string };
  const clients: Client[] = [];

  const connect = async (privateKey = userKey.privateKey, ep = endpoint): Promise<Client> => {
    const c = await connectSsh(ep, privateKey);
    clients.push(c);
    return c;
  };

  before(async () => {
    dir = tempDir('ssh');
    const host = await loadHostKey(join(dir, 'agent'));
    server = new AgentSshServer(host.privateKey);
    const port = await server.listen('127.0.0.1', 0);
    endpoint = { host: '127.0.0.1', port, user: 'dstack', hostKey: host.publicKey };
    userKey = await userSshKey(join(dir, 'home'));
    echo = await echoServer();
  });
  beforeEach(() => {
    mkdirSync(join(dir, 'job'), { recursive: true });
    server.setJob({ publicKey: userKey.publicKey, allowedPorts: [echo.port], cwd: join(dir, 'job'), env: { PATH: process.env.PATH ?? '/usr/bin:/bin', DSTACK_TEST: 'job-env' } });
  });
  afterEach(() => {
    for (const c of clients.splice(0)) c.end();
  });
  after(async () => {
    await server.close();
    echo.server.close();
    removeAll(dir);
  });

  it('refuses a key that is not the run\'s, and everyone between jobs', async () => {
    const other = ssh2.utils.generateKeyPairSync('ed25519');
    const refused = await connect(other.private).catch((e: unknown) => e as Error);
    expect(refused).to.be.instanceOf(Error);
    expect((refused as Error).message).to.equal(`SSH to the agent at 127.0.0.1:${endpoint.port}: this key was refused (it is not the key of the run)`);
    server.setJob(undefined);
    const between = await connect().catch((e: unknown) => e as Error);
    expect((between as Error).message).to.match(/this key was refused/);
  });

  it('accepts the run\'s key: a command runs in the job\'s folder with the job\'s environment', async () => {
    const c = await connect();
    const r = await exec(c, 'pwd; echo "$DSTACK_TEST"; exit 3');
    expect(r).to.deep.equal({ out: `${join(dir, 'job')}\njob-env\n`, code: 3 });
  });

  it('forwards a local port to one of the run\'s ports on the agent\'s loopback', async () => {
    const c = await connect();
    const f = await forwardPort(c, echo.port, 0);
    try {
      expect(f.localPort).to.not.equal(echo.port);
      expect(await ask(f.localPort, 'hello')).to.equal('echo:hello');
    } finally {
      await f.close();
    }
  });

  it('forwards every port of a service over one connection (another local port when the same one is taken here)', async () => {
    const second = await echoServer();
    server.setJob({ publicKey: userKey.publicKey, allowedPorts: [echo.port, second.port], cwd: join(dir, 'job'), env: {} });
    const s = await forwardService(endpoint, [echo.port, second.port], userKey.privateKey);
    try {
      // Agent and job share this machine here, so each port is taken locally by the job's own server.
      expect([...s.local.keys()]).to.deep.equal([echo.port, second.port]);
      expect(s.local.get(echo.port)).to.not.equal(echo.port);
      expect(await ask(s.local.get(echo.port) ?? 0, 'one')).to.equal('echo:one');
      expect(await ask(s.local.get(second.port) ?? 0, 'two')).to.equal('echo:two');
    } finally {
      await s.close();
      second.server.close();
    }
  });

  it('refuses a forward to a port outside the run\'s ports, and to another host', async () => {
    const other = await echoServer();
    const c = await connect();
    const open = (host: string, port: number): Promise<string> =>
      new Promise((resolve) => c.forwardOut('127.0.0.1', 5000, host, port, (err) => resolve(err ? err.message : 'opened')));
    try {
      expect(await open('127.0.0.1', other.port)).to.match(/^\(SSH\) Channel open failure/);
      expect(await open('10.0.0.1', echo.port)).to.match(/^\(SSH\) Channel open failure/);
      expect(await open('127.0.0.1', echo.port)).to.equal('opened');
      // Through the CLI's forward, the refused channel closes the local connection without an answer.
      const f = await forwardPort(c, other.port, 0);
      expect(await ask(f.localPort, 'hello')).to.equal('');
      await f.close();
    } finally {
      other.server.close();
    }
  });

  it("forwards to a port the job's user listens on (VS Code's Remote-SSH server), when jobs run as their own user", async () => {
    const other = await echoServer();
    const me = { name: 'me', uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, home: dir };
    // The listener is this process's: the job user here.
    expect(await loopbackListeners(other.port)).to.deep.equal([me.uid]);
    server.setJob({ publicKey: userKey.publicKey, allowedPorts: [echo.port], cwd: join(dir, 'job'), env: {}, user: me });
    const c = await connect();
    const f = await forwardPort(c, other.port, 0);
    try {
      expect(await ask(f.localPort, 'vscode')).to.equal('echo:vscode');
    } finally {
      await f.close();
      other.server.close();
    }
    // Nobody listens on a closed port: refused, user or not.
    expect(await loopbackListeners(other.port)).to.deep.equal([]);
  });

  it('reads the listeners of a port from /proc/net/tcp: loopback or any address, LISTEN only', async () => {
    const file = join(dir, 'tcp');
    writeFileSync(
      file,
      [
        '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
        '   0: 0100007F:22B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 1 1 0 100 0 0 10 0',
        '   1: 00000000:22B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0',
        '   2: 0A00000F:22B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     5        0 3 1 0 100 0 0 10 0',
        '   3: 0100007F:22B8 0100007F:871E 01 00000000:00000000 00:00000000 00000000     7        0 4 1 0 100 0 0 10 0',
        '',
      ].join('\n'),
    );
    expect(await loopbackListeners(8888, [file])).to.deep.equal([998, 0]);
  });

  it('refuses an agent whose host key is not the one its attempt published', async () => {
    const wrong = { ...endpoint, hostKey: ssh2.utils.generateKeyPairSync('ed25519').public };
    const e = await connect(userKey.privateKey, wrong).catch((x: unknown) => x as Error);
    expect(e).to.be.instanceOf(Error);
    expect((e as Error).message).to.match(/^SSH to the agent at 127\.0\.0\.1:\d+: /);
  });

  it('gives an interactive shell a terminal of the client\'s size, and resizes it with the client\'s window', async () => {
    const c = await connect();
    const ch = await new Promise<import('ssh2').ClientChannel>((resolve, reject) =>
      c.shell({ term: 'xterm', rows: 24, cols: 80 }, (err, channel) => (err ? reject(err) : resolve(channel))),
    );
    let seen = '';
    ch.on('data', (d: Buffer) => (seen += d.toString()));
    // A line of the terminal's output, after the echo of the command and bash's escapes.
    const line = (text: string): RegExp => new RegExp(`[\\r\\n]${text}\\r\\n`);
    ch.write('tty; stty size\n');
    await waitFor(() => (line('24 80').test(seen) ? true : undefined), 10_000, 'the first size');
    expect(seen).to.match(/\/dev\/pts\/\d+/);
    ch.setWindow(50, 120, 0, 0);
    // Asked again until the resize has landed (it is applied by a process of its own).
    await waitFor(async () => {
      ch.write('stty size\n');
      await new Promise((r) => setTimeout(r, 100));
      return line('50 120').test(seen) ? true : undefined;
    }, 10_000, 'the new size');
    ch.end('exit\n');
  });

  it('closes the sessions when the job ends', async () => {
    const c = await connect();
    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
    const shell = new Promise<string>((resolve) => {
      c.exec('echo started; sleep 30', (err, ch) => {
        if (err) return resolve(err.message);
        ch.once('data', (d: Buffer) => resolve(d.toString()));
      });
    });
    expect(await shell).to.equal('started\n');
    server.setJob(undefined);
    await closed;
  });

  it('reachFor on EC2: forwards through the running attempt\'s endpoint; a bad host key is said once, not forwarded', async () => {
    const home = join(dir, 'home');
    const local = await coordinatorContext({ configYaml: '', home: join(dir, 'cli'), cwd: dir, compute: new ExternalAgents() });
    const ctx = { ...local, config: parseConfig('backend: aws\naws:\n  bucket: b-1\n', 'test', home) };
    const record = { repoId: 'r1', runName: 'lazy-owl-1' } as const;
    const attemptWith = (hostKey: string): string =>
      JSON.stringify({ attempt: 1, agentId: 'i-1', host: 'h', startedAt: new Date().toISOString(), heartbeatAt: new Date().toISOString(), leaseMs: 60_000, state: 'running', service: { ports: [{ port: echo.port, open: true }], ssh: { ...endpoint, hostKey } } });
    await ctx.store.put(runKeys.attempt(record.repoId, record.runName, 1), attemptWith(ssh2.utils.generateKeyPairSync('ed25519').public));
    const r = await reachFor(ctx, record as unknown as Parameters<typeof reachFor>[1]);
    try {
      expect(r.forwarded).to.equal(true);
      expect(await r.reach(echo.port)).to.equal(undefined);
      expect(await r.reach(echo.port)).to.equal(undefined);
      expect(ctx.out.text()).to.match(/^dstack: no forward to run lazy-owl-1 yet: SSH to the agent at 127\.0\.0\.1:\d+: .*; trying again\n$/);
      await ctx.store.put(runKeys.attempt(record.repoId, record.runName, 1), attemptWith(endpoint.hostKey));
      const at = await r.reach(echo.port);
      expect(at?.host).to.equal('localhost');
      expect(await ask(at?.port ?? 0, 'via reach')).to.equal('echo:via reach');
    } finally {
      await r.close();
    }
  });

  it('keeps its host key across restarts', async () => {
    const again = await loadHostKey(join(dir, 'agent'));
    expect(again.publicKey).to.equal(endpoint.hostKey);
    expect(statSync(join(dir, 'agent', 'ssh_host_ed25519_key')).mode & 0o777).to.equal(0o600);
  });
});

describe('the user\'s SSH key (~/.dstack/ssh/id_ed25519)', () => {
  it('is made once, the folder 0700 and the private key 0600', async () => {
    const home = tempDir('sshkey');
    try {
      const first = await userSshKey(home);
      expect(first.privateKeyFile).to.equal(join(home, 'ssh', 'id_ed25519'));
      expect(first.publicKey).to.match(/^ssh-ed25519 [A-Za-z0-9+/=]+ dstack$/);
      expect(statSync(join(home, 'ssh')).mode & 0o777).to.equal(0o700);
      expect(statSync(first.privateKeyFile).mode & 0o777).to.equal(0o600);
      expect(readFileSync(`${first.privateKeyFile}.pub`, 'utf8')).to.equal(`${first.publicKey}\n`);
      const second = await userSshKey(home);
      expect(second).to.deep.equal(first);
    } finally {
      removeAll(home);
    }
  });
});

describe('dstack ssh RUN --config', () => {
  it('prints a Host block with the host key pinned in <dstack home>/ssh/known_hosts, and the VS Code link', async () => {
    const home = tempDir('sshconfig');
    try {
      const hostKey = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGCNyEi8co39kieDkpuDD40glhX+QS//czuZsEfHXxLk dstack-agent';
      const ssh = { host: '203.0.113.7', port: 10022, user: 'dstack-job', hostKey };
      // An older line for the same address (the instance was replaced) is replaced; others stay.
      mkdirSync(join(home, 'ssh'));
      writeFileSync(join(home, 'ssh', 'known_hosts'), '[203.0.113.7]:10022 ssh-ed25519 OLDKEY\n[198.51.100.1]:10022 ssh-ed25519 OTHER\n');
      const block = await sshConfigBlock(home, 'lazy-owl-1', ssh, join(home, 'ssh', 'id_ed25519'), '/root/.dstack/work/a/lazy-owl-1-1-abc/code');
      expect(block).to.equal(
        [
          'Host dstack-lazy-owl-1',
          '  HostName 203.0.113.7',
          '  Port 10022',
          '  User dstack-job',
          `  IdentityFile ${join(home, 'ssh', 'id_ed25519')}`,
          '  IdentitiesOnly yes',
          `  UserKnownHostsFile ${join(home, 'ssh', 'known_hosts')}`,
          '  StrictHostKeyChecking yes',
          '# VS Code: vscode://vscode-remote/ssh-remote+dstack-lazy-owl-1/root/.dstack/work/a/lazy-owl-1-1-abc/code',
        ].join('\n'),
      );
      expect(readFileSync(join(home, 'ssh', 'known_hosts'), 'utf8')).to.equal(
        '[198.51.100.1]:10022 ssh-ed25519 OTHER\n[203.0.113.7]:10022 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGCNyEi8co39kieDkpuDD40glhX+QS//czuZsEfHXxLk\n',
      );
    } finally {
      removeAll(home);
    }
  });
});

describe('dstack config: aws.allowedCidrs', () => {
  const run = async (flags: ConfigOptions, publicAddress: () => Promise<string>): Promise<{ yaml: string; said: string }> => {
    const home = tempDir('cidrs');
    try {
      const out = captureOutput();
      const code = await configCommand({ home, out, env: {}, check: async () => undefined, publicAddress }, { backend: 'aws', bucket: 'b-1', ...flags });
      expect(code).to.equal(0);
      return { yaml: readFileSync(join(home, 'config.yaml'), 'utf8'), said: out.text() };
    } finally {
      removeAll(home);
    }
  };

  it("defaults to the caller's public address as a /32, looked up when config runs", async () => {
    const r = await run({}, async () => '203.0.113.7\n');
    expect(r.yaml).to.include('  allowedCidrs:\n    - 203.0.113.7/32\n');
    expect(r.said.split('\n')[0]).to.equal("The EC2 agents' SSH port (10022) is open to your public address only (203.0.113.7/32): change it with `dstack config --allowed-cidrs CIDR[,CIDR]`.");
  });

  it('takes --allowed-cidrs as given, without a lookup; a failed lookup is a warning and sets nothing', async () => {
    const given = await run({ 'allowed-cidrs': '10.0.0.0/8, 192.0.2.1/32' }, () => Promise.reject(new Error('must not be called')));
    expect(given.yaml).to.include('  allowedCidrs:\n    - 10.0.0.0/8\n    - 192.0.2.1/32\n');
    const failed = await run({}, () => Promise.reject(new Error('https://checkip.amazonaws.com: ENOTFOUND')));
    expect(failed.yaml).to.not.include('allowedCidrs');
    expect(failed.said.split('\n')[0]).to.equal(
      'warning: could not look up your public address (https://checkip.amazonaws.com: ENOTFOUND): until you set `dstack config --allowed-cidrs CIDR`, `dstack ssh` and port forwards cannot reach EC2 agents',
    );
  });
});
