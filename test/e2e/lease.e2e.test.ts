import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT, agentPids, dstack, killAgents, makeHome, makeRepo, removeAll, tempDir, waitFor } from '../support/cli.js';

// Each line of the marker: the job's shell pid (one per attempt) and the time it wrote, in ms.
const WORKFLOWS = `workflows:
  - name: ticker
    provider: bash
    env:
      - MARKER
    commands:
      - for i in $(seq 1 40); do echo "$$ $(date +%s%3N)" >> "$MARKER"; sleep 0.2; done
      - echo finished
`;

interface RunJson {
  runName: string;
  status: string;
  attempts: Array<{ agentId: string; attempt: number }>;
}

describe('e2e: a stalled agent loses its job', function () {
  this.timeout(120_000);
  const LEASE_SEC = 2;
  let repo: string;
  let home: string;
  let scratch: string;
  beforeEach(() => {
    repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
    // sandbox off: the job writes its marker into the test's scratch folder, outside its own.
    home = makeHome({ visibilityTimeoutSec: LEASE_SEC, maxParallelJobs: 1, sandbox: 'off' });
    scratch = tempDir('scratch');
  });
  afterEach(async () => {
    for (const pid of agentPids(home)) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // Gone.
      }
    }
    await killAgents(home);
    removeAll(repo, home, scratch);
  });

  it('kill -STOP of the agent for 3x the lease: its job is killed before another agent runs attempt 2; they never overlap', async () => {
    const marker = join(scratch, 'marker.txt');
    const sub = await dstack(['run', '-d', 'ticker'], { cwd: repo, home, env: { MARKER: marker } });
    expect(sub.code, sub.stderr).to.equal(0);
    const name = /Run ([a-z]+-[a-z]+-\d+)/.exec(sub.stdout)?.[1] ?? '';
    await waitFor(() => (existsSync(marker) && readFileSync(marker, 'utf8').split('\n').length > 3 ? true : undefined), 20_000, 'the job to start');
    const [first] = agentPids(home);
    expect(first).to.be.a('number');
    process.kill(first ?? 0, 'SIGSTOP');
    const resume = setTimeout(() => process.kill(first ?? 0, 'SIGCONT'), 3 * LEASE_SEC * 1000);
    try {
      // Another agent, as the fleet would start one for the job that came back to the queue.
      spawn(process.execPath, [AGENT], { env: { ...process.env, DSTACK_HOME: home, DSTACK_AGENT_ID: 'second' }, detached: true, stdio: 'ignore' }).unref();
      const done = await waitFor(
        async () => {
          const [view] = JSON.parse((await dstack(['ps', '-a', '--json', name], { cwd: repo, home })).stdout) as RunJson[];
          return view?.status === 'done' ? view : undefined;
        },
        60_000,
        'the run to finish',
      );
      expect(done.attempts.map((a) => `${a.attempt} ${a.agentId}`)).to.deep.equal([`1 ${done.attempts[0]?.agentId ?? ''}`, '2 second']);
    } finally {
      clearTimeout(resume);
      process.kill(first ?? 0, 'SIGCONT');
    }
    const byPid = new Map<string, number[]>();
    for (const line of readFileSync(marker, 'utf8').trim().split('\n')) {
      const [pid, ms] = line.split(' ');
      byPid.set(pid ?? '', [...(byPid.get(pid ?? '') ?? []), Number(ms)]);
    }
    const [one, two] = [...byPid.values()];
    expect(byPid.size).to.equal(2);
    expect(two).to.have.length(40);
    // The first attempt's last write comes before the second's first: never two at once.
    expect(Math.max(...(one ?? [])), 'attempt 1 still wrote after attempt 2 started').to.be.below(Math.min(...(two ?? [])));
  });
});
