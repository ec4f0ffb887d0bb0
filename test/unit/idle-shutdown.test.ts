import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, removeAll, tempDir } from '../support/cli.js';

// ami/idle-shutdown.sh is the unit's ExecStopPost. It cannot power this machine off, so
// `systemctl` and `shutdown` are stand-ins on PATH that record how they were called, and the EC2
// check reads a fake /sys.
const SCRIPT = join(ROOT, 'ami', 'idle-shutdown.sh');

describe('ami/idle-shutdown.sh (the unit ExecStopPost)', () => {
  let dir: string;
  const idleExit = { DSTACK_SHUTDOWN_ON_IDLE: '1', SERVICE_RESULT: 'success', EXIT_CODE: 'exited', EXIT_STATUS: '0' };

  beforeEach(() => {
    dir = tempDir('idle-shutdown');
    mkdirSync(join(dir, 'bin'));
    const stub = (name: string, body: string): void => {
      writeFileSync(join(dir, 'bin', name), `#!/bin/sh\necho "$*" >> "${dir}/${name}.calls"\n${body}\n`);
      chmodSync(join(dir, 'bin', name), 0o755);
    };
    stub('systemctl', 'if [ -n "$STUB_FAIL" ]; then exit 1; fi; printf "%s\\n" "$STUB_JOB"');
    stub('shutdown', 'exit 0');
    ec2Vendor('Amazon EC2');
  });
  afterEach(() => removeAll(dir));

  function ec2Vendor(vendor: string): void {
    mkdirSync(join(dir, 'sys', 'devices', 'virtual', 'dmi', 'id'), { recursive: true });
    writeFileSync(join(dir, 'sys', 'devices', 'virtual', 'dmi', 'id', 'sys_vendor'), `${vendor}\n`);
  }

  function runScript(env: Record<string, string>): { code: number | null; out: string; shutdown: string | null; systemctl: string | null } {
    const r = spawnSync('bash', [SCRIPT], {
      env: { PATH: `${join(dir, 'bin')}:/usr/bin:/bin`, DSTACK_SYSFS: join(dir, 'sys'), STUB_JOB: '', ...env },
      encoding: 'utf8',
    });
    const calls = (name: string): string | null => (existsSync(join(dir, `${name}.calls`)) ? readFileSync(join(dir, `${name}.calls`), 'utf8') : null);
    return { code: r.status, out: r.stdout + r.stderr, shutdown: calls('shutdown'), systemctl: calls('systemctl') };
  }

  it('powers off an EC2 instance whose agent exited 0 on its own', () => {
    const r = runScript(idleExit);
    expect(r.code).to.equal(0);
    expect(r.systemctl).to.equal('show --property=Job --value dstack-agent.service\n');
    expect(r.shutdown).to.equal('-h now dstack agent idle\n');
    expect(r.out).to.equal('idle-shutdown: the agent exited after its idle timeout; powering off\n');
  });

  it('recognises a Xen-based EC2 instance by its hypervisor uuid', () => {
    ec2Vendor('Xen');
    mkdirSync(join(dir, 'sys', 'hypervisor'));
    writeFileSync(join(dir, 'sys', 'hypervisor', 'uuid'), 'EC2e7b8c4-0000-0000-0000-000000000000\n');
    expect(runScript(idleExit).shutdown).to.equal('-h now dstack agent idle\n');
  });

  it('leaves the machine up when DSTACK_SHUTDOWN_ON_IDLE is not 1', () => {
    const r = runScript({ ...idleExit, DSTACK_SHUTDOWN_ON_IDLE: '0' });
    expect(r.shutdown).to.equal(null);
    expect(r.out).to.equal('idle-shutdown: DSTACK_SHUTDOWN_ON_IDLE is not 1; leaving the machine up\n');
  });

  it('leaves the machine up when the agent failed or was killed', () => {
    for (const [result, code, status] of [['exit-code', 'exited', '1'], ['signal', 'killed', 'KILL'], ['timeout', 'killed', 'TERM']] as const) {
      const r = runScript({ ...idleExit, SERVICE_RESULT: result, EXIT_CODE: code, EXIT_STATUS: status });
      expect(r.code).to.equal(0);
      expect(r.shutdown).to.equal(null);
      expect(r.out).to.equal(`idle-shutdown: the agent ended with ${result}/${code}/${status}, not an idle exit; leaving the machine up\n`);
    }
  });

  it('leaves the machine up when the stop was asked for (systemd has a job on the unit)', () => {
    const r = runScript({ ...idleExit, STUB_JOB: '4711' });
    expect(r.shutdown).to.equal(null);
    expect(r.out).to.equal('idle-shutdown: the agent was stopped on request (job 4711); leaving the machine up\n');
  });

  it('leaves the machine up when systemd cannot be asked', () => {
    const r = runScript({ ...idleExit, STUB_FAIL: '1' });
    expect(r.shutdown).to.equal(null);
    expect(r.out).to.equal('idle-shutdown: cannot ask systemd whether a stop was requested; leaving the machine up\n');
  });

  it('leaves the machine up off EC2', () => {
    ec2Vendor('QEMU');
    const r = runScript(idleExit);
    expect(r.shutdown).to.equal(null);
    expect(r.systemctl).to.equal(null);
    expect(r.out).to.equal('idle-shutdown: not an EC2 instance; leaving the machine up\n');
  });
});
