import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, dstack, killAgents, makeHome, makeRepo, removeAll, waitFor } from '../support/cli.js';

const WORKFLOWS = `workflows:
  - name: slow
    provider: bash
    commands:
      - head -c 100000 /dev/zero > ballast.bin
      - echo started
      - sleep 3
      - echo finished
`;

describe('e2e: gc', function () {
  this.timeout(90_000);
  let repo: string;
  let home: string;
  beforeEach(() => {
    repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
    home = makeHome({ visibilityTimeoutSec: 2, stopGraceSec: 2, maxParallelJobs: 2 });
  });
  afterEach(async () => {
    await killAgents(home);
    removeAll(repo, home);
  });

  it('the agent that takes over from a killed one removes the dead attempt\'s job folder at its start', async () => {
    const child = spawn(process.execPath, [CLI, 'run', 'slow'], { cwd: repo, env: { ...process.env, DSTACK_HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
    const name = await waitFor(() => /Run ([a-z]+-[a-z]+-\d+)/.exec(stderr)?.[1], 10_000, 'the run name');
    await waitFor(() => (stdout.includes('started') ? true : undefined), 15_000, 'the job to start');
    const ps = JSON.parse((await dstack(['ps', '--json', name], { cwd: repo, home })).stdout) as Array<{ attempts: Array<{ agentId: string }> }>;
    const agentId = ps[0]?.attempts[0]?.agentId ?? '';
    const killedWork = join(home, 'local', 'work', agentId);
    expect(readdirSync(killedWork).filter((n) => n.startsWith(`${name}-1-`) && !n.endsWith('.deadline'))).to.have.length(1);
    const entry = JSON.parse(readFileSync(join(home, 'local', 'agents', `${agentId}.json`), 'utf8')) as { pid: number };
    process.kill(entry.pid, 'SIGKILL');

    expect(await exited, stderr).to.equal(0);
    expect(stdout.match(/finished/g)).to.have.length(1);
    expect(existsSync(killedWork)).to.equal(false);
    const gc = await dstack(['gc', '--dry-run'], { cwd: repo, home });
    expect(gc.code, gc.stderr).to.equal(0);
    expect(gc.stdout).to.not.include('work folder');
    expect(gc.stdout).to.match(/^Would free .* in \d+ item\(s\)\.$/m);
  });
});
