import { expect } from 'chai';
import type { JobSpec } from '../../common/spec/job-spec.js';
import { cacheKey } from '../../coordinator/submit.js';

function spec(over: Partial<JobSpec> = {}): JobSpec {
  return {
    specVersion: 1,
    repoId: 'local/test',
    runName: 'a-b-1',
    jobId: 'job1',
    workflow: 'train',
    provider: 'python',
    commands: ['python train.py'],
    env: {},
    workingDir: '.',
    artifacts: [{ path: 'model', mount: false }],
    deps: [],
    pinnedDeps: [],
    cache: true,
    portCount: 0,
    resources: { interruptible: false, local: false },
    runArgs: [],
    code: { commit: 'c0ffee', branch: 'main', remoteUrl: null, archiveKey: null, diffKey: null, diffSha256: null, untrackedKey: null, untrackedSha256: null },
    submittedAt: '2026-11-25T00:00:00.000Z',
    ...over,
  };
}

describe('the rerun cache key', () => {
  it('ignores names, ids and times', () => {
    expect(cacheKey(spec({ runName: 'c-d-2', jobId: 'job2', submittedAt: '2026-11-26T00:00:00.000Z' }))).to.equal(cacheKey(spec()));
  });

  it('differs when the workflow installs another requirements file (the agent installs it, so it is no longer in the commands)', () => {
    const a = cacheKey(spec({ specVersion: 2, requirements: 'requirements.txt' }));
    const b = cacheKey(spec({ specVersion: 2, requirements: 'requirements-gpu.txt' }));
    expect(a).to.not.equal(b);
    expect(a).to.not.equal(cacheKey(spec()));
  });
});
