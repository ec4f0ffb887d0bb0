import type { JobSpec } from '../../common/spec/job-spec.js';

/** A whole bash job spec with nothing set but what the test gives: its commands, and any field it overrides. */
export function bashSpec(commands: string[], o: Partial<JobSpec> = {}): JobSpec {
  return {
    specVersion: 1,
    repoId: 'local/test',
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
    ...o,
  };
}
