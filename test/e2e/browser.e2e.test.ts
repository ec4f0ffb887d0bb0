import { expect } from 'chai';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { openBrowser, outputFolderName, TEST_OUTPUT } from '../support/browser.js';

/** Command lines of the running chromium processes that use a profile under the temp dir's dstack-chromium-profile-*. */
function chromiumProfiles(): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      const m = /--user-data-dir=([^\0]*dstack-chromium-profile-[^\0]*)/.exec(cmd);
      if (m?.[1]) found.push(m[1]);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

describe('e2e: the test browser (Debian chromium through playwright-core)', function () {
  this.timeout(90_000);
  let server: Server;
  let url: string;
  before(async () => {
    // A page whose list is filled in by script, as the Jupyter tree and the VS Code explorer are.
    server = createServer((req, res) => {
      if (req.url === '/files.json') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(['README.md', 'train.py']));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/html' }).end(
        '<!doctype html><title>tree</title><ul id="files"></ul><script>fetch("/files.json").then(r => r.json()).then(f => { for (const n of f) { const li = document.createElement("li"); li.textContent = n; document.getElementById("files").append(li); } })</script>',
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('opens a local page, sees what its script rendered, saves a screenshot in the test output folder, and leaves no browser behind', async function () {
    const browser = await openBrowser(this);
    let profile: string | undefined;
    try {
      profile = chromiumProfiles()[0];
      expect(profile, 'a chromium with a fresh dstack-chromium-profile-* user-data dir').to.be.a('string');
      await browser.page.goto(url);
      await browser.page.locator('#files li', { hasText: 'train.py' }).waitFor({ timeout: 20_000 });
      expect(await browser.page.locator('#files li').allTextContents()).to.deep.equal(['README.md', 'train.py']);
      const shot = await browser.screenshot('tree');
      expect(shot).to.equal(`${TEST_OUTPUT}/${outputFolderName(this.test?.fullTitle() ?? '')}/tree.png`);
      expect(readFileSync(shot).subarray(1, 4).toString()).to.equal('PNG');
    } finally {
      await browser.close();
    }
    expect(chromiumProfiles().filter((p) => p === profile)).to.deep.equal([]);
    expect(existsSync(profile ?? '')).to.equal(false);
  });
});
