import { expect } from 'chai';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../support/chroot.js';
import { ROOT, removeAll, tempDir } from '../support/cli.js';

// scripts/build-ami.sh needs an AWS account to build for real. Here PACKER is a stand-in that
// records its arguments and answers in Packer's -machine-readable format (time,target,type,data),
// so what is checked is the wrapper: settings from config.yaml and DSTACK_AWS_*, the bundle built
// first, the image id picked out of the artifact line, and a failed build reported as one.
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

describe('slow: scripts/build-ami.sh around packer build', function () {
  this.timeout(60_000);
  let dir: string;

  beforeEach(() => {
    dir = tempDir('build-ami');
    writeFileSync(
      join(dir, 'packer'),
      [
        '#!/usr/bin/env bash',
        `printf '%s\\n' "$@" > "${dir}/args"`,
        'printf \'%s\\n\' "${AWS_PROFILE:-}" > "' + dir + '/profile"',
        'echo "1700000000,,ui,say,==> amazon-ebs.agent: Creating AMI%!(PACKER_COMMA) please wait"',
        'if [[ -n "${STUB_FAIL:-}" ]]; then echo "1700000001,,error,Build failed"; exit 1; fi',
        'echo "1700000002,amazon-ebs.agent,artifact-count,1"',
        'echo "1700000003,amazon-ebs.agent,artifact,0,id,eu-west-1:ami-0aaaaaaaaaaaaaaaa%!(PACKER_COMMA)eu-central-1:ami-0bbbbbbbbbbbbbbbb"',
        '',
      ].join('\n'),
    );
    chmodSync(join(dir, 'packer'), 0o755);
    writeFileSync(join(dir, 'config.yaml'), 'backend: aws\naws:\n  region: eu-central-1\n  subnet: subnet-0123\n  profile: builder\n  bucket: my-bucket\n');
  });
  afterEach(() => removeAll(dir));

  const build = (env: Record<string, string>, args: string[] = []) =>
    run('bash', [join(ROOT, 'scripts', 'build-ami.sh'), ...args], { env: { ...process.env, PACKER: join(dir, 'packer'), DSTACK_HOME: dir, ...env } });

  it('passes region, subnet and profile from config.yaml and prints the id of the image in that region', async () => {
    const r = await build({}, ['-var', 'instance_type=c6i.2xlarge']);
    expect(r.code, r.output).to.equal(0);
    expect(r.output.trim().split('\n').at(-1)).to.equal('ami-0bbbbbbbbbbbbbbbb');
    expect(r.output).to.include('==> amazon-ebs.agent: Creating AMI, please wait');
    expect(readFileSync(join(dir, 'args'), 'utf8').split('\n').filter(Boolean)).to.deep.equal([
      'build', '-machine-readable', '-color=false',
      '-var', 'region=eu-central-1', '-var', 'subnet_id=subnet-0123', '-var', `version=${VERSION}`,
      '-var', 'instance_type=c6i.2xlarge', 'ami/',
    ]);
    expect(readFileSync(join(dir, 'profile'), 'utf8')).to.equal('builder\n');
    expect(readFileSync(join(ROOT, 'dist', 'agent-bundle', 'VERSION'), 'utf8')).to.equal(`${VERSION}\n`);
  });

  it('DSTACK_AWS_REGION and DSTACK_AWS_EC2_SUBNET override the config', async () => {
    const r = await build({ DSTACK_AWS_REGION: 'eu-west-1', DSTACK_AWS_EC2_SUBNET: 'subnet-9999' });
    expect(r.code, r.output).to.equal(0);
    expect(r.output.trim().split('\n').at(-1)).to.equal('ami-0aaaaaaaaaaaaaaaa');
    const args = readFileSync(join(dir, 'args'), 'utf8');
    expect(args).to.include('region=eu-west-1\n').and.include('subnet_id=subnet-9999\n');
  });

  it('fails when packer fails', async () => {
    const r = await build({ STUB_FAIL: '1' });
    expect(r.code).to.equal(1);
    expect(r.output).to.not.match(/^ami-/m);
  });
});
