import { expect } from 'chai';
import { checkDownloadPath } from '../../coordinator/ui/api-artifacts.js';
import { HttpError } from '../../coordinator/ui/http.js';

/** The status a bad path gets, or 'ok'. */
function verdict(path: string, allowRoot = false): number | 'ok' {
  try {
    checkDownloadPath(path, allowRoot);
    return 'ok';
  } catch (e) {
    if (e instanceof HttpError) return e.status;
    throw e;
  }
}

describe('ui download path check', () => {
  it('refuses .., absolute paths, NUL, backslashes and empty or . segments with 400', () => {
    for (const bad of ['..', '../etc/passwd', 'sub/../../x', 'a/..', '/etc/passwd', 'notes.txt\0.png', 'a\\..\\b', 'a//b', './a', 'a/.', '']) {
      expect(verdict(bad), JSON.stringify(bad)).to.equal(400);
    }
  });

  it('takes a path inside the artifact, and the whole artifact only for a tar', () => {
    for (const good of ['blob.bin', 'sub/blob.bin', 'a..b/c..', '.hidden/x']) expect(verdict(good), good).to.equal('ok');
    expect(verdict('', true)).to.equal('ok');
  });

  it('names the refused path in one line, its NUL shown as \\0', () => {
    try {
      checkDownloadPath('x\0y', false);
      expect.fail('accepted a NUL');
    } catch (e) {
      expect((e as Error).message).to.include('x\\0y').and.not.include('\n');
    }
  });
});
