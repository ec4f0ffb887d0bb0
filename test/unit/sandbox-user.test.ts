import { expect } from 'chai';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { lookupJobUser } from '../../agent/job-user.js';
import { sandboxed } from '../../agent/sandbox.js';
import { removeAll, tempDir } from '../support/cli.js';
import { removeThrowawayUser, throwawayUserOrSkip } from '../support/job-user.js';

/**
 * A job user's sandbox: a hidden path the user cannot even reach (inside a 0700 folder of root's, as
 * /root/.ssh is on Debian) is left alone, since bwrap, running as that user, cannot mount over it and
 * fails the job ("Can't mkdir /root/.ssh"); one the user can reach is hidden as before.
 */
describe('sandbox: hidden paths, with a job user', () => {
  let user: string | undefined;
  let dir = '';
  before(function () {
    user = throwawayUserOrSkip(this);
  });
  after(() => {
    if (user) removeThrowawayUser(user);
    removeAll(dir);
  });

  it('hides what the job user can reach, and leaves out what it cannot reach', async () => {
    dir = tempDir('sandbox-user');
    chmodSync(dir, 0o755);
    const closed = join(dir, 'root-home');
    mkdirSync(join(closed, '.ssh'), { recursive: true });
    chmodSync(closed, 0o700);
    const open = join(dir, 'open');
    mkdirSync(join(open, '.aws'), { recursive: true });
    chmodSync(open, 0o755);
    const script = join(dir, 'job.sh');
    writeFileSync(script, 'true\n');
    const jobUser = await lookupJobUser(user ?? '');
    const sandbox = { bwrap: '/usr/bin/bwrap', hidden: [join(closed, '.ssh'), join(open, '.aws')], readOnly: [] };
    const args = (await sandboxed(sandbox, script, dir, { artifacts: [], pinnedDeps: [] }, jobUser)).args;
    expect(args.join(' ')).to.include(`--tmpfs ${join(open, '.aws')}`);
    expect(args).to.not.include(join(closed, '.ssh'));
    // Without a job user (the agent's own uid runs the job), everything listed is hidden.
    const asAgent = (await sandboxed(sandbox, script, dir, { artifacts: [], pinnedDeps: [] })).args;
    expect(asAgent.join(' ')).to.include(`--tmpfs ${join(closed, '.ssh')}`);
  });
});
