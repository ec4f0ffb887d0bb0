import { expect } from 'chai';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { dstack, spawnCli, waitFor, withRepoAndHome } from '../support/cli.js';

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
  const t = withRepoAndHome(WORKFLOWS, { visibilityTimeoutSec: 2, stopGraceSec: 2, maxParallelJobs: 2 }, { each: true });

  it('the agent that takes over from a killed one removes the dead attempt\'s job folder at its start', async () => {
    const { out, exited } = spawnCli(['run', 'slow'], { cwd: t.repo, home: t.home });
    const name = await waitFor(() => /Run ([a-z]+-[a-z]+-\d+)/.exec(out.stderr)?.[1], 10_000, 'the run name');
    await waitFor(() => (out.stdout.includes('started') ? true : undefined), 15_000, 'the job to start');
    const ps = JSON.parse((await dstack(['ps', '--json', name], { cwd: t.repo, home: t.home })).stdout) as Array<{ attempts: Array<{ agentId: string }> }>;
    const agentId = ps[0]?.attempts[0]?.agentId ?? '';
    const killedWork = join(t.home, 'local', 'work', agentId);
    expect(readdirSync(killedWork).filter((n) => n.startsWith(`${name}-1-`) && !n.endsWith('.deadline'))).to.have.length(1);
    const entry = JSON.parse(readFileSync(join(t.home, 'local', 'agents', `${agentId}.json`), 'utf8')) as { pid: number };
    process.kill(entry.pid, 'SIGKILL');

    expect(await exited, out.stderr).to.equal(0);
    expect(out.stdout.match(/finished/g)).to.have.length(1);
    expect(existsSync(killedWork)).to.equal(false);
    const gc = await dstack(['gc', '--dry-run'], { cwd: t.repo, home: t.home });
    expect(gc.code, gc.stderr).to.equal(0);
    expect(gc.stdout).to.not.include('work folder');
    expect(gc.stdout).to.match(/^Would free .* in \d+ item\(s\)\.$/m);
  });
});
