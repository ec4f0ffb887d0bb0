import { expect } from 'chai';
import { statSync } from 'node:fs';
import { basename } from 'node:path';
import { openBrowser, type TestBrowser } from '../support/browser.js';
import { dstack, killAgents, makeHome, makeRepo, removeAll, type CliResult } from '../support/cli.js';
import { requireTool } from '../support/tools.js';
import { devEnvironmentsYaml } from '../support/corpus.js';

const linkOf = (r: CliResult): string => /is ready: (http\S+)/.exec(r.stdout)?.[1] ?? '';
const runName = (r: CliResult): string => /Run ([a-z]+-[a-z]+-\d+)/.exec(r.stdout + r.stderr)?.[1] ?? '';

/**
 * The "done when": in a repo whose workflow file is the corpus's dev-environments.yaml,
 * `dstack run ide-notebook` and `dstack run ide-code` print a link, and the link opens the dev
 * environment in a real browser (Debian's chromium), showing the repo.
 */
describe('e2e: dev environment links open in a real browser', function () {
  this.timeout(180_000);
  let repo = '';
  let home = '';
  let browser: TestBrowser | undefined;
  afterEach(async () => {
    await browser?.close();
    browser = undefined;
    if (home) await dstack(['stop', '-y', '-a'], { cwd: repo, home }).catch(() => undefined);
    await killAgents(home);
    removeAll(repo, home);
  });

  const setUp = (extraConfig: Record<string, unknown> = {}): void => {
    repo = makeRepo({ '.dstack/workflows/dev-environments.yaml': devEnvironmentsYaml(), 'train.py': 'print("hello")\n', 'notes.md': '# notes\n' });
    home = makeHome({ maxParallelJobs: 1, ...extraConfig });
  };

  it('ide-notebook: the Jupyter file tree lists the repo\'s files', async function () {
    requireTool(this, 'jupyter-notebook');
    setUp();
    browser = await openBrowser(this);
    const r = await dstack(['run', 'ide-notebook', '-d'], { cwd: repo, home });
    expect(r.code, r.stderr).to.equal(0);
    const link = linkOf(r);
    expect(link, r.stdout).to.match(/^http:\/\/127\.0\.0\.1:\d+\/tree\?token=/);
    await browser.page.goto(link);
    const tree = browser.page.locator('#notebook_list');
    await tree.getByText('train.py').waitFor({ timeout: 30_000 });
    await tree.getByText('notes.md').waitFor();
    const shot = await browser.screenshot('notebook-tree');
    expect(statSync(shot).size).to.be.above(1000);
    // Another browser (no cookie, no token) gets the login page, not the tree.
    const other = await browser.page.context().browser()?.newContext();
    if (other) {
      const p = await other.newPage();
      await p.goto(new URL(link).origin + '/tree');
      expect(await p.content()).not.to.include('train.py');
      expect(p.url()).to.include('/login');
      await other.close();
    }
    expect(runName(r)).to.match(/-\d+$/);
  });

  it('ide-code: the VS Code workbench shows the repo\'s folder in the explorer', async function () {
    const codeServer = requireTool(this, 'code-server');
    setUp({ codeServer });
    browser = await openBrowser(this);
    const r = await dstack(['run', 'ide-code', '-d'], { cwd: repo, home, timeoutMs: 90_000 });
    expect(r.code, r.stderr).to.equal(0);
    const link = linkOf(r);
    expect(link, r.stdout).to.match(/^http:\/\/127\.0\.0\.1:\d+\/\?dstack-token=/);
    await browser.page.goto(link);
    // The explorer's root is the folder the server opened: the job's checkout, named after the repo.
    const folder = basename(repo).toUpperCase();
    await browser.page.locator('.explorer-folders-view, .explorer-viewlet').first().waitFor({ timeout: 90_000 });
    await browser.page.getByRole('treeitem', { name: /train\.py/ }).first().waitFor({ timeout: 90_000 });
    const explorerText = (await browser.page.locator('.explorer-viewlet, .sidebar').first().innerText()).toUpperCase();
    expect(explorerText).to.include(folder);
    const shot = await browser.screenshot('vscode-workbench');
    expect(statSync(shot).size).to.be.above(1000);
  });
});
