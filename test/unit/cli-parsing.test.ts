import { expect } from 'chai';
import { UsageError } from '../../common/errors.js';
import { parseSince } from '../../coordinator/commands/logs.js';
import { repoIdFor } from '../../coordinator/code-capture.js';
import { formatTable } from '../../coordinator/output.js';
import { splitRunArgv } from '../../coordinator/run-args.js';

describe('run argument splitting (0.0.14 style)', () => {
  it('sends everything after the workflow that is not a dstack option to the workflow', () => {
    expect(splitRunArgv(['print-args', '-l', 'Hello, world!'])).to.deep.equal({ options: [], overrides: [], workflow: 'print-args', args: ['-l', 'Hello, world!'] });
  });
  it('takes dstack options on either side of the workflow name', () => {
    expect(splitRunArgv(['-d', 'train', '--dry-run', '-t', 'best', '-e', 'A=1', '--gpu', '2', '-i', '--epochs', '3'])).to.deep.equal({
      options: ['-d', '--dry-run', '-t', 'best', '-e', 'A=1', '--gpu', '2', '-i'],
      overrides: ['-e', 'A=1', '--gpu', '2', '-i'],
      workflow: 'train',
      args: ['--epochs', '3'],
    });
  });
  it('stops taking options at the first workflow argument, and after --', () => {
    expect(splitRunArgv(['train', '--epochs', '3', '-d'])).to.deep.equal({ options: [], overrides: [], workflow: 'train', args: ['--epochs', '3', '-d'] });
    expect(splitRunArgv(['train', '--', '-d'])).to.deep.equal({ options: [], overrides: [], workflow: 'train', args: ['-d'] });
  });
  it('rejects an unknown option before the workflow name', () => {
    expect(() => splitRunArgv(['--bogus', 'train'])).to.throw(UsageError, /unknown option --bogus/);
  });
});

describe('logs --since', () => {
  const now = Date.parse('2022-11-01T12:00:00Z');
  it('reads durations and ISO times', () => {
    expect(parseSince('90s', now)).to.equal(now - 90_000);
    expect(parseSince('1h', now)).to.equal(now - 3_600_000);
    expect(parseSince('2d', now)).to.equal(now - 172_800_000);
    expect(parseSince('2022-11-01T10:00:00Z', now)).to.equal(Date.parse('2022-11-01T10:00:00Z'));
  });
  it('says what to write when it cannot read the value', () => {
    expect(() => parseSince('yesterday', now)).to.throw(UsageError, /use a duration such as 30m/);
  });
});

describe('repo ids', () => {
  it('are the same for the SSH and HTTPS remotes of one repo', () => {
    expect(repoIdFor('/x', 'git@github.com:dstackai/dstack-examples.git')).to.equal('github.com/dstackai/dstack-examples');
    expect(repoIdFor('/x', 'https://github.com/dstackai/dstack-examples')).to.equal('github.com/dstackai/dstack-examples');
    expect(repoIdFor('/x', 'https://user@gitlab.com/a/b.git/')).to.equal('gitlab.com/a/b');
  });
  it('fall back to the folder name and a hash of its path without a remote', () => {
    expect(repoIdFor('/home/me/my project', null)).to.match(/^local\/my-project-[0-9a-f]{10}$/);
    expect(repoIdFor('/a/p', null)).to.not.equal(repoIdFor('/b/p', null));
  });
});

describe('tables', () => {
  it('aligns columns and trims trailing space', () => {
    expect(formatTable(['RUN', 'STATUS'], [['a-b-1', 'Done'], ['long-name-12', '']])).to.equal('RUN           STATUS\na-b-1         Done\nlong-name-12\n');
  });
});
