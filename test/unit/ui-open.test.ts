import { expect } from 'chai';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { openBrowser, redirectPage, type Spawner } from '../../coordinator/ui/open-browser.js';
import { removeAll, tempDir } from '../support/cli.js';

const TOKEN = 'tok_-ABCdef0123456789abcdefghijklmnopqrstuvwxy';
const URL_WITH_TOKEN = `http://127.0.0.1:4321/?token=${TOKEN}`;

/** A spawner that records what it was asked to start, and starts nothing. */
function recorder(): { spawn: Spawner; calls: Array<{ command: string; args: string[] }> } {
  const calls: Array<{ command: string; args: string[] }> = [];
  return { calls, spawn: (command, args) => (calls.push({ command, args }), { on: () => undefined, unref: () => undefined }) };
}

describe('ui: opening the browser without the token on a command line', () => {
  let tmp = '';
  beforeEach(() => (tmp = tempDir('ui-open')));
  afterEach(() => removeAll(tmp));

  it('writes a 0600 redirect page in a 0700 folder and hands the opener only its file:// URL', () => {
    const r = recorder();
    const opened = openBrowser(URL_WITH_TOKEN, { note: () => undefined, spawn: r.spawn, platform: 'linux', tmpDir: tmp });
    expect(statSync(opened.dir).mode & 0o777, 'the folder mode').to.equal(0o700);
    expect(statSync(opened.file).mode & 0o777, 'the file mode').to.equal(0o600);
    expect(r.calls).to.have.length(1);
    const call = r.calls[0]!;
    expect(call.command).to.equal('xdg-open');
    expect(call.args).to.have.length(1);
    expect(fileURLToPath(call.args[0] ?? '')).to.equal(opened.file);
    // Nothing of the token on the command line every local user can read in /proc/PID/cmdline.
    expect([call.command, ...call.args].join(' ')).not.to.include(TOKEN);
    expect(readFileSync(opened.file, 'utf8')).to.equal(redirectPage(URL_WITH_TOKEN));
    opened.remove();
    expect(existsSync(opened.dir), 'the folder is removed on exit').to.equal(false);
  });

  it('uses `open` on macOS, and says so when no opener could start', () => {
    const notes: string[] = [];
    const calls: string[] = [];
    const failing: Spawner = (command) => {
      calls.push(command);
      return { on: (_e, listener) => listener(new Error('ENOENT')), unref: () => undefined };
    };
    openBrowser(URL_WITH_TOKEN, { note: (l) => notes.push(l), spawn: failing, platform: 'darwin', tmpDir: tmp }).remove();
    expect(calls).to.deep.equal(['open']);
    expect(notes).to.deep.equal(['dstack ui: could not open a browser: open the URL above']);
  });

  it('redirects at once by a meta refresh and a script, with the URL escaped for each', () => {
    const page = redirectPage(URL_WITH_TOKEN);
    expect(page).to.include(`<meta http-equiv="refresh" content="0;url=${URL_WITH_TOKEN}">`);
    expect(page).to.include(`window.location.replace("${URL_WITH_TOKEN}");`);
    expect(page).to.include('<meta name="referrer" content="no-referrer">');
    const odd = redirectPage('http://127.0.0.1:1/?token=a&b="</script><x>');
    expect(odd).to.include('content="0;url=http://127.0.0.1:1/?token=a&amp;b=&quot;&lt;/script&gt;&lt;x&gt;"');
    expect(odd).to.include('window.location.replace("http://127.0.0.1:1/?token=a&b=\\"\\u003c/script>\\u003cx>");');
    expect(odd.match(/<\/script>/g)).to.have.length(1);
  });
});
