import { expect } from 'chai';
import { DEFAULT_PATH, baseEnv, buildJobEnv } from '../../agent/environment.js';

describe("agent: the job's environment", () => {
  const agentEnv = {
    PATH: '/opt/conda/bin:/usr/bin:/bin',
    HOME: '/home/me',
    LANG: 'C.UTF-8',
    AWS_SECRET_ACCESS_KEY: 'secret',
    AWS_PROFILE: 'prod',
    DSTACK_HOME: '/home/me/.dstack',
    GITHUB_TOKEN: 'ghp_x',
    LC_ALL: '',
  };

  it('takes only the base variables from the agent, and a default PATH when it has none', () => {
    expect(baseEnv(agentEnv)).to.deep.equal({ PATH: '/opt/conda/bin:/usr/bin:/bin', HOME: '/home/me', LANG: 'C.UTF-8' });
    expect(baseEnv({ HOME: '/h' })).to.deep.equal({ HOME: '/h', PATH: DEFAULT_PATH });
  });

  it("layers the workflow's env, then extraEnv (secrets), then dstack's job variables", () => {
    const env = buildJobEnv({
      base: baseEnv(agentEnv),
      workflowEnv: { A: 'from-workflow', B: 'from-workflow', RUN_NAME: 'spoofed', PATH: '/evil' },
      extraEnv: { B: 'from-secret' },
      binDir: '/work/job/bin',
      runName: 'brave-fox-1',
      jobId: 'abc123',
      ports: [41000, 41001],
    });
    expect(env).to.deep.equal({
      PATH: '/work/job/bin:/opt/conda/bin:/usr/bin:/bin',
      HOME: '/home/me',
      LANG: 'C.UTF-8',
      A: 'from-workflow',
      B: 'from-secret',
      RUN_NAME: 'brave-fox-1',
      JOB_ID: 'abc123',
      PYTHONUNBUFFERED: '1',
      PORT_0: '41000',
      JOB_PORT_0: '41000',
      PORT_1: '41001',
      JOB_PORT_1: '41001',
    });
  });
});
