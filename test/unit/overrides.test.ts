import { expect } from 'chai';
import { UsageError, type SpecProblem } from '../../common/errors.js';
import type { CodeRef } from '../../common/code-ref.js';
import { buildJobSpec, type JobSpec } from '../../common/spec/job-spec.js';
import { parseWorkflowsText } from '../../common/spec/load.js';
import { applyOverrides } from '../../coordinator/overrides.js';

const CODE: CodeRef = { commit: 'abc', branch: 'main', remoteUrl: null, archiveKey: null, diffKey: null, diffSha256: null, untrackedKey: null, untrackedSha256: null };

function gpuSpec(): JobSpec {
  const problems: SpecProblem[] = [];
  const [located] = parseWorkflowsText('workflows:\n  - name: train\n    provider: bash\n    commands: [nvidia-smi]\n    resources:\n      gpu: { count: 2, name: A10G }\n', '.dstack/workflows.yaml', problems);
  expect(problems).to.deep.equal([]);
  return buildJobSpec({ located: located!, repoId: 'r', runName: 'a-b-1', jobId: 'j', args: [], shellEnv: {}, code: CODE, now: new Date(0) });
}

describe('run overrides of resources', () => {
  it('--gpu 0 drops the GPU request, so a GPU workflow runs on a machine without one', () => {
    const spec = gpuSpec();
    expect(spec.resources.gpu).to.deep.equal({ count: 2, name: 'A10G' });
    expect(applyOverrides(spec, { env: [], deps: [], artifacts: [], gpu: 0 }, {}).resources.gpu).to.equal(undefined);
    expect(applyOverrides(spec, { env: [], deps: [], artifacts: [], gpu: 1 }, {}).resources.gpu).to.deep.equal({ count: 1, name: 'A10G' });
  });

  it('--gpu 0 with --gpu-name or --gpu-memory, or a negative count, is one clear line', () => {
    const refused = (o: { gpu?: number; gpuName?: string; gpuMemory?: string }): string => {
      try {
        applyOverrides(gpuSpec(), { env: [], deps: [], artifacts: [], ...o }, {});
      } catch (e) {
        expect(e).to.be.instanceOf(UsageError);
        return (e as Error).message;
      }
      return 'accepted';
    };
    expect(refused({ gpu: 0, gpuName: 'V100' })).to.equal('--gpu 0 asks for no GPU: drop --gpu-name and --gpu-memory, or ask for one or more GPUs');
    expect(refused({ gpu: 0, gpuMemory: '16GB' })).to.equal('--gpu 0 asks for no GPU: drop --gpu-name and --gpu-memory, or ask for one or more GPUs');
    expect(refused({ gpu: -1 })).to.equal('--gpu -1: use 0 (no GPU) or a positive number');
  });
});
