import { expect } from 'chai';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { insideOpener, insideReaderSync, readInside } from '../../common/artifacts/open-inside.js';
import { removeAll, tempDir } from '../support/cli.js';

describe('artifact files are read only from inside their folder', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir('inside');
    mkdirSync(join(dir, 'art', 'sub'), { recursive: true });
    mkdirSync(join(dir, 'outside'));
    writeFileSync(join(dir, 'outside', 'secret'), 'not the job\'s');
    writeFileSync(join(dir, 'art', 'sub', 'ok.txt'), 'mine');
  });
  afterEach(() => removeAll(dir));

  it('reads a file inside; refuses a link as the last name and a link to elsewhere on the path (a swap made after the walk)', async () => {
    const open = insideOpener(join(dir, 'art'));
    expect((await readInside(open, 'sub/ok.txt')).toString()).to.equal('mine');
    // As if the job had swapped these in after the walk listed regular files and folders.
    symlinkSync(join(dir, 'outside', 'secret'), join(dir, 'art', 'leaf'));
    symlinkSync(join(dir, 'outside'), join(dir, 'art', 'moved'));
    const refused = async (rel: string): Promise<string> => (await readInside(open, rel).then(() => 'read', (e: unknown) => (e as Error).message));
    expect(await refused('leaf')).to.match(/ELOOP|symbolic link/);
    expect(await refused('moved/secret')).to.equal(`artifact file moved/secret is no longer inside ${join(dir, 'art')} (a link on its path, made while it was being saved): not saved`);
  });

  it('the synchronous reader of small files refuses the same links', async () => {
    const read = await insideReaderSync(join(dir, 'art'));
    expect(read('sub/ok.txt').toString()).to.equal('mine');
    symlinkSync(join(dir, 'outside', 'secret'), join(dir, 'art', 'leaf'));
    symlinkSync(join(dir, 'outside'), join(dir, 'art', 'moved'));
    const refused = (rel: string): string => {
      try {
        read(rel);
        return 'read';
      } catch (e) {
        return (e as Error).message;
      }
    };
    expect(refused('leaf')).to.match(/ELOOP|symbolic link/);
    expect(refused('moved/secret')).to.equal(`artifact file moved/secret is no longer inside ${join(dir, 'art')} (a link on its path, made while it was being saved): not saved`);
  });
});
