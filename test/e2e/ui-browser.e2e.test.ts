import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Locator } from 'playwright-core';
import { openBrowser, outputFolderName, type TestBrowser } from '../support/browser.js';
import { dstack, killAgents, makeHome, makeRepo, removeAll, tempDir, waitFor } from '../support/cli.js';
import { loginCookie, rawRequest, startUi, waitForText, type UiServer } from '../support/ui.js';
import { UI_REPO_FILES, statusOf, submit, submitWithDiff, waitForStatus } from '../support/ui-runs.js';

const FINAL = ['done', 'failed', 'stopped'];
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/**
 * `dstack ui` on a local backend filled by real runs (one agent pool, one server, one headless
 * chromium for the whole file), checked as a user sees it: the DOM contract of design15.md.
 */
describe('e2e: dstack ui in a real browser', function () {
  this.timeout(90_000);
  let repo = '';
  let home = '';
  let flags = '';
  let ui: UiServer | undefined;
  let browser: TestBrowser | undefined;
  const runs: Record<string, string> = {};
  const pageErrors: string[] = [];
  const page = () => browser!.page;
  const flag = (name: string): string => join(flags, name);
  /**
   * Logs in through the printed URL (token → cookie), then loads the page at the hash route, as a
   * pasted link does. A fresh document, not a hash change: the app reads the hash at its first
   * render and listens for changes only from an effect, so a change in between would be lost.
   */
  const open = async (route: string): Promise<void> => {
    await page().goto(ui!.url);
    await page().goto('about:blank');
    await page().goto(`${ui!.base}#${route}`);
  };

  before(async function () {
    this.timeout(180_000);
    browser = await openBrowser(this, 'e2e dstack ui in a real browser');
    page().on('pageerror', (e) => pageErrors.push(e.message));
    repo = makeRepo(UI_REPO_FILES);
    // sandbox off: the gate workflow waits for a file the test makes under the host's /tmp.
    home = makeHome({ maxParallelJobs: 3, agentIdleTimeoutSec: 300, stopGraceSec: 1, sandbox: 'off' });
    flags = tempDir('ui-flags');
    for (const w of ['quick', 'fails', 'produce', 'hostile']) runs[w] = await submit(repo, home, w);
    runs.diffed = await submitWithDiff(repo, home, 'quick');
    for (const name of Object.values(runs)) await waitForStatus(repo, home, name, FINAL);
    const tagged = await dstack(['tags', 'add', 'nightly', runs.quick!], { cwd: repo, home });
    if (tagged.code !== 0) throw new Error(`dstack tags add: ${tagged.stderr}`);
    ui = await startUi({ cwd: repo, home });
  });

  afterEach(async function () {
    // What the page showed when a test failed: beside the screenshots, for whoever reads the failure.
    const t = this.currentTest;
    if (t?.state === 'failed' && browser) await browser.screenshot(`failed-${outputFolderName(t.title).slice(0, 40)}`).catch(() => undefined);
  });

  after(async () => {
    await browser?.close();
    const code = await ui?.stop();
    if (home) await killAgents(home);
    removeAll(repo, home, flags);
    // A server that does not exit 0 on SIGTERM leaves the user's terminal with an error.
    if (code !== undefined) expect(code, `dstack ui exited ${code} on SIGTERM: ${ui?.out.stderr ?? ''}`).to.equal(0);
  });

  it('auth: no token, a wrong token, a foreign Host or a path outside the prefix gets no page; the printed URL sets the cookie and shows the runs', async () => {
    const { origin, url, base, prefix } = ui!;
    for (const path of ['/', '/api/runs', '/api/events', '/?token=wrong', `/api/runs/${runs.quick}`, prefix, `${prefix}api/runs`, `${prefix}api/events`, `${prefix}app.js`]) {
      const r = await rawRequest(origin + path);
      expect(r.status, `GET ${path} without the token`).to.equal(401);
      expect(r.headers['referrer-policy'], `the Referrer-Policy of GET ${path}`).to.equal('no-referrer');
    }
    expect((await rawRequest(`${base}api/runs`, { headers: { cookie: 'dstack_ui=wrong' } })).status, 'a wrong cookie').to.equal(401);
    const login = await rawRequest(url);
    expect(login.status).to.equal(302);
    expect(login.headers.location).to.match(/^\/s\/[A-Za-z0-9_-]{22}\/$/);
    expect(login.headers['referrer-policy']).to.equal('no-referrer');
    const setCookie = login.headers['set-cookie']?.[0] ?? '';
    expect(setCookie).to.match(/^dstack_ui=[^;]+;/).and.match(/HttpOnly/i).and.match(/SameSite=Strict/i);
    expect(setCookie, 'the cookie is scoped to the prefix').to.match(new RegExp(`; Path=${prefix}(;|$)`));
    const cookie = setCookie.split(';')[0] ?? '';
    const runsAnswer = await rawRequest(`${base}api/runs`, { headers: { cookie } });
    expect(runsAnswer.status).to.equal(200);
    expect(runsAnswer.headers['referrer-policy']).to.equal('no-referrer');
    // Outside the prefix only the login lives: the right cookie or token opens nothing there.
    for (const path of ['/', '/api/runs', '/app.js', `/api/runs/${runs.quick}`]) {
      expect((await rawRequest(origin + path, { headers: { cookie } })).status, `GET ${path} with the cookie`).to.equal(401);
    }
    expect((await rawRequest(`${origin}/api/runs?token=${ui!.token}`)).status, '/api/runs?token=').to.equal(401);
    const port = new URL(origin).port;
    expect((await rawRequest(`${base}api/runs`, { headers: { cookie, host: `evil.example:${port}` } })).status, 'DNS rebinding').to.equal(403);
    const csrf = await rawRequest(`${base}api/runs/${runs.quick}/tag`, { method: 'POST', headers: { cookie, origin: 'http://evil.example', 'content-type': 'application/json' }, body: '{"tag":"x"}' });
    expect(csrf.status, 'a POST from another origin').to.equal(403);

    await page().context().clearCookies();
    const denied = await page().goto(`${base}#/runs`);
    expect(denied?.status()).to.equal(401);
    expect(await page().locator('table[data-testid=runs]').count()).to.equal(0);
    await page().goto(url);
    expect(page().url()).to.equal(base);
    await page().locator('table[data-testid=runs]').waitFor({ timeout: 15_000 });
    const cookies = await page().context().cookies(base);
    expect(cookies.find((c) => c.name === 'dstack_ui')).to.deep.include({ httpOnly: true, path: prefix });
  });

  it("auth: the cookie never reaches another port of 127.0.0.1 (a job's web server), nor does the prefix in a Referer", async () => {
    // A job's web server on the same host, as a Services link opens it: it records what the browser sends.
    const seen: Array<{ path: string; cookie: string; referer: string }> = [];
    const job = createServer((req, res) => {
      seen.push({ path: req.url ?? '', cookie: req.headers.cookie ?? '', referer: req.headers.referer ?? '' });
      res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>job</title><p>job server</p>');
    });
    await new Promise<void>((r) => job.listen(0, '127.0.0.1', r));
    try {
      const jobUrl = `http://127.0.0.1:${(job.address() as AddressInfo).port}`;
      await page().goto(ui!.url);
      await page().locator('table[data-testid=runs]').waitFor({ timeout: 15_000 });
      // Followed from the dashboard's page, as a click on a link does, then typed in the address bar.
      await Promise.all([page().waitForURL(`${jobUrl}/from-page`), page().evaluate(`location.href = ${JSON.stringify(`${jobUrl}/from-page`)}`)]);
      await page().goto(`${jobUrl}/`);
      await page().goto(`${jobUrl}/api/runs`);
      // The pages and the favicon the browser asks for on its own.
      expect(seen.map((s) => s.path).filter((p) => p !== '/favicon.ico')).to.deep.equal(['/from-page', '/', '/api/runs']);
      for (const s of seen) {
        expect(s.cookie, 'the Cookie header the job received').not.to.match(/dstack_ui=/);
        expect(s.referer, 'the Referer the job received').not.to.include(ui!.prefix);
      }
      // The browser still holds the cookie: it is scoped, not lost.
      await page().goto(`${ui!.base}#/runs`);
      await page().locator('table[data-testid=runs] tr[data-run]').first().waitFor({ timeout: 15_000 });
    } finally {
      job.closeAllConnections();
      await new Promise((r) => job.close(r));
    }
  });

  it('auth: two dashboards (two repos) keep two cookies; logging in to one does not log out of the other', async () => {
    const other = await startUi({ cwd: repo, home });
    try {
      await page().context().clearCookies();
      await page().goto(ui!.url);
      await page().goto(other.url);
      expect(page().url()).to.equal(other.base);
      const jar = (await page().context().cookies()).filter((c) => c.name === 'dstack_ui');
      expect(jar.map((c) => c.path).sort(), 'one cookie per dashboard').to.deep.equal([ui!.prefix, other.prefix].sort());
      for (const server of [ui!, other]) {
        await page().goto(`${server.base}#/runs`);
        await page().locator('table[data-testid=runs] tr[data-run]').first().waitFor({ timeout: 15_000 });
      }
    } finally {
      expect(await other.stop(), `the second dstack ui on SIGTERM: ${other.out.stderr}`).to.equal(0);
    }
  });

  it('runs: the table lists the runs; a new run shows up and its status turns to done without a reload', async () => {
    await open('/runs');
    const row = (name: string): Locator => page().locator(`table[data-testid=runs] tr[data-run="${name}"]`);
    for (const [workflow, name] of Object.entries(runs)) {
      await waitForText(row(name).locator('td[data-col=status]'), workflow === 'fails' ? /failed/i : /done/i, `the status of ${name}`, 15_000);
      expect(await row(name).locator('td[data-col=workflow]').textContent()).to.equal(workflow === 'diffed' ? 'quick' : workflow);
    }
    await page().evaluate('window.__sameDocument = 1');
    const gated = await submit(repo, home, 'gate', flag('runs-table'));
    await waitForText(row(gated).locator('td[data-col=status]'), /running/i, `${gated} to show up running`);
    writeFileSync(flag('runs-table'), '');
    await waitForText(row(gated).locator('td[data-col=status]'), /done/i, `${gated} to turn done`);
    expect(await page().evaluate('window.__sameDocument'), 'the page reloaded').to.equal(1);
  });

  it('run page: the uncommitted change at submit is shown as a diff', async () => {
    await open(`/run/${runs.diffed}`);
    const diff = page().locator('[data-testid=diff]');
    await waitForText(diff.locator('.diff-del'), /lr = 0\.1/, 'the removed line');
    await waitForText(diff.locator('.diff-add'), /lr = 0\.2/, 'the added line');
    expect(await diff.textContent()).to.include('train.py');
  });

  it('run page: the logs follow a running job to its end', async () => {
    const gated = await submit(repo, home, 'gate', flag('logs'));
    await open(`/run/${gated}`);
    const logs = page().locator('[data-testid=logs]');
    await waitForText(logs, /tick 2/, 'the first lines');
    expect(await logs.textContent()).not.to.include('finished');
    await page().evaluate('window.__sameDocument = 2');
    writeFileSync(flag('logs'), '');
    const text = await waitForText(logs, /finished/, 'the last line');
    expect(text.match(/tick 1|tick 2|tick 3|finished/g)).to.deep.equal(['tick 1', 'tick 2', 'tick 3', 'finished']);
    await waitForText(page().locator('[data-testid=status]'), /done/i, 'the final status');
    expect(await page().evaluate('window.__sameDocument'), 'the page reloaded').to.equal(2);
  });

  it('artifacts: a file downloaded through the page is byte for byte what the job wrote', async () => {
    const printed = /^([0-9a-f]{64}) {2}out\/sub\/blob\.bin$/m.exec((await dstack(['logs', runs.produce!], { cwd: repo, home })).stdout)?.[1];
    expect(printed, 'the sha256 the job printed').to.be.a('string');
    await open(`/run/${runs.produce}`);
    const link = page().locator('[data-testid=artifacts] a[data-download$="blob.bin"]');
    await link.first().waitFor({ timeout: 15_000 });
    const [download] = await Promise.all([page().waitForEvent('download', { timeout: 30_000 }), link.first().click()]);
    const saved = join(flags, 'downloaded.bin');
    await download.saveAs(saved);
    expect(download.suggestedFilename()).to.equal('blob.bin');
    expect(statSync(saved).size).to.equal(300_000);
    expect(sha256(readFileSync(saved))).to.equal(printed);
  });

  it('an artifact download URL with `..`, an absolute path or a NUL is refused with 400', async () => {
    const cookie = await loginCookie(ui!);
    const base = `${ui!.base}api/runs/${runs.produce}/artifacts/0`;
    const tree = JSON.parse((await rawRequest(`${base}/tree`, { headers: { cookie } })).body.toString()) as { entries: Array<{ path: string }> };
    const blob = tree.entries.find((e) => e.path.endsWith('blob.bin'))?.path ?? '';
    const ok = await rawRequest(`${base}/download?path=${encodeURIComponent(blob)}`, { headers: { cookie } });
    expect(ok.status, `the same cookie reads ${blob}`).to.equal(200);
    expect(ok.body.length).to.equal(300_000);
    for (const bad of ['../../../../etc/passwd', `sub/../../${blob}`, '%2E%2E%2Fnotes.txt', '..', '/etc/passwd', 'notes.txt%00.png']) {
      const r = await rawRequest(`${base}/download?path=${bad.includes('%') ? bad : encodeURIComponent(bad)}`, { headers: { cookie } });
      expect(r.status, `path=${bad}: ${r.body.toString().slice(0, 200)}`).to.equal(400);
      expect(r.body.toString()).not.to.include('root:');
    }
  });

  it('a log line holding <script> and terminal escapes renders as text, with the colour styled', async () => {
    await open(`/run/${runs.hostile}`);
    const logs = page().locator('[data-testid=logs]');
    const text = await waitForText(logs, /title-done/, 'the last log line');
    expect(text).to.include('<script>window.__pwned=1</script>');
    expect(await page().evaluate('typeof window.__pwned')).to.equal('undefined');
    expect(await logs.locator('script').count(), 'script elements in the logs').to.equal(0);
    expect(text).to.include('red plain');
    for (const raw of ['\x1b', '\x07', '[31m', '[0m', ']0;']) expect(text, `the logs show ${JSON.stringify(raw)}`).not.to.include(raw);
    expect(await page().title()).not.to.equal('x');
    // The test's tsconfig has no DOM types: the page-side code is a string.
    const color = String(await page().evaluate(`(() => {
      const walker = document.createTreeWalker(document.querySelector('[data-testid=logs]'), NodeFilter.SHOW_TEXT);
      for (let n = walker.nextNode(); n; n = walker.nextNode()) if (n.textContent === 'red' && n.parentElement) return getComputedStyle(n.parentElement).color;
      return 'no text node "red"';
    })()`));
    const [r = 0, g = 255, b = 255] = (/rgb\((\d+), (\d+), (\d+)\)/.exec(color) ?? []).slice(1).map(Number);
    expect(r > 120 && g < 100 && b < 100, `"red" is coloured ${color}`).to.equal(true);
  });

  it('buttons: stop asks first (no leaves it running), then stops the running job', async () => {
    const gated = await submit(repo, home, 'gate', flag('never'));
    await waitForStatus(repo, home, gated, ['running']);
    await open(`/run/${gated}`);
    const dialog = page().locator('dialog[data-testid=confirm]');
    await page().locator('button[data-action=stop]').click({ timeout: 15_000 });
    await dialog.waitFor({ state: 'visible', timeout: 5_000 });
    await dialog.locator('button[data-confirm=no]').click();
    await dialog.waitFor({ state: 'hidden', timeout: 5_000 });
    expect(await statusOf(repo, home, gated)).to.equal('running');
    await page().locator('button[data-action=stop]').click();
    await dialog.locator('button[data-confirm=yes]').click({ timeout: 5_000 });
    await waitForText(page().locator('[data-testid=status]'), /stopped/i, 'the stopped status on the page');
    expect(await statusOf(repo, home, gated)).to.equal('stopped');
  });

  it('buttons: tag (named in the confirm) and restart act as the CLI does', async () => {
    await open(`/run/${runs.produce}`);
    const dialog = page().locator('dialog[data-testid=confirm]');
    await page().locator('button[data-action=tag]').click({ timeout: 15_000 });
    await dialog.locator('input').fill('golden', { timeout: 5_000 });
    await dialog.locator('button[data-confirm=yes]').click();
    await waitFor(async () => (new RegExp(`^golden\\s+${runs.produce}\\s`, 'm').test((await dstack(['tags', 'list'], { cwd: repo, home })).stdout) ? true : undefined), 15_000, '`dstack tags list` to show golden');
    await page().locator('button[data-action=restart]').click();
    await dialog.locator('button[data-confirm=yes]').click({ timeout: 5_000 });
    const restarts = async (): Promise<Array<{ runName: string; status: string }>> =>
      (JSON.parse((await dstack(['ps', '-a', '--json'], { cwd: repo, home })).stdout) as Array<{ runName: string; status: string; restartOf: string | null }>).filter((r) => r.restartOf === runs.produce);
    const again = await waitFor(async () => (await restarts())[0], 15_000, `a restart of ${runs.produce}`);
    expect(await waitForStatus(repo, home, again.runName, FINAL)).to.equal('done');
    expect(await restarts()).to.have.length(1);
  });

  it('runs: the filters by status, workflow and tag show only the matching runs', async () => {
    await open('/runs');
    const rows = page().locator('table[data-testid=runs] tr[data-run]');
    // Read in one go in the page: row by row, a row can go between the count and the read.
    const shown = async (): Promise<string[]> => {
      const names: unknown = await page().evaluate(`[...document.querySelectorAll('table[data-testid=runs] tr[data-run]')].map((e) => e.getAttribute('data-run'))`);
      return Array.isArray(names) ? names.map(String).sort() : [];
    };
    const expectRows = async (want: string[], what: string): Promise<void> => {
      let last: string[] = [];
      await waitFor(async () => ((last = await shown()).join() === [...want].sort().join() ? true : undefined), 15_000, what).catch((e: Error) => {
        throw new Error(`${e.message}: expected ${want.join(', ')}, got ${last.join(', ') || 'no rows'}`);
      });
    };
    await rows.first().waitFor({ timeout: 15_000 });
    const status = page().locator('select[data-filter=status]');
    const workflow = page().locator('select[data-filter=workflow]');
    await status.selectOption('failed');
    await expectRows([runs.fails!], 'the failed runs');
    await status.selectOption('');
    await workflow.selectOption('hostile');
    await expectRows([runs.hostile!], 'the runs of hostile');
    await workflow.selectOption('');
    await page().locator('input[data-filter=tag]').fill('nightly');
    await expectRows([runs.quick!], 'the run tagged nightly');
  });

  it('screenshots: each page is saved under the test output folder', async () => {
    const pages: Array<[string, string, string]> = [
      ['runs', '/runs', 'table[data-testid=runs] tr[data-run]'],
      ['run', `/run/${runs.produce}`, '[data-testid=artifacts] a[data-download]'],
      ['machines', '/machines', 'table[data-testid=agents]'],
      ['cost', '/cost', 'canvas[data-testid=cost-chart]'],
      ['services', '/services', 'table[data-testid=services]'],
    ];
    await open('/runs');
    await page().locator('table[data-testid=runs] tr[data-run]').first().waitFor({ timeout: 15_000 });
    const missing: string[] = [];
    for (const [name, route, ready] of pages) {
      // Through the nav link where there is one, as a user goes; the run page by its route.
      const byNav = name !== 'run' && (await page().locator(`a[data-nav=${name}]`).click({ timeout: 5_000 }).then(() => true, () => false));
      if (!byNav) await page().goto(`${ui!.base}#${route}`);
      if (!byNav && name !== 'run') missing.push(`${name}: a[data-nav=${name}]`);
      const shown = await page().locator(ready).first().waitFor({ timeout: 15_000 }).then(() => true, () => false);
      if (!shown) missing.push(`${name}: ${ready}`);
      expect(statSync(await browser!.screenshot(name)).size).to.be.above(5_000);
    }
    expect(missing, 'pages whose content did not show').to.deep.equal([]);
    expect(pageErrors, 'uncaught errors in the pages').to.deep.equal([]);
  });
});
