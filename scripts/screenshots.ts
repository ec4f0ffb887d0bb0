// The README's dashboard screenshots (`npm run screenshots`, after the build): a demo repo on a
// local backend with a few real runs (one failed, one done with artifacts and a tag, one submitted
// with an uncommitted change, one still running), `dstack ui --no-open` on it, and headless
// chromium at 1280×800 writing docs/screenshots/runs.png and run.png. The same harness as the
// browser tests (test/support/browser.ts, ui.ts, ui-runs.ts), so the pictures show what they check.
import { join } from 'node:path';
import { launchChromium, type TestBrowser } from '../test/support/browser.js';
import { ROOT, dstack, killAgents, makeHome, makeRepo, removeAll, tempDir } from '../test/support/cli.js';
import { findTool, skipReason } from '../test/support/tools.js';
import { startUi, type UiServer } from '../test/support/ui.js';
import { UI_REPO_FILES, submit, submitWithDiff, waitForStatus } from '../test/support/ui-runs.js';

const OUT = join(ROOT, 'docs', 'screenshots');
const VIEWPORT = { width: 1280, height: 800 };
const WAIT_MS = 30_000;

async function main(): Promise<void> {
  const chromium = findTool('chromium');
  if (chromium === undefined) throw new Error(skipReason('chromium').replace(/^skipped: /, 'screenshots: '));
  const repo = makeRepo(UI_REPO_FILES);
  // sandbox off: the running demo run waits for a file under the host's /tmp, which the sandbox hides.
  const home = makeHome({ maxParallelJobs: 3, agentIdleTimeoutSec: 120, stopGraceSec: 1, sandbox: 'off' });
  const flags = tempDir('ui-flags');
  let ui: UiServer | undefined;
  let browser: TestBrowser | undefined;
  try {
    const finished = [await submit(repo, home, 'quick'), await submit(repo, home, 'fails'), await submit(repo, home, 'produce')];
    const train = await submitWithDiff(repo, home, 'train');
    for (const run of [...finished, train]) await waitForStatus(repo, home, run, ['done', 'failed']);
    // A tag, so the table's Tag column shows one.
    const tagged = await dstack(['tags', 'add', 'golden', finished[2] ?? ''], { cwd: repo, home });
    if (tagged.code !== 0) throw new Error(`dstack tags add: ${tagged.stderr.trim()}`);
    // One run left running, so the table shows a live row; the agents are killed at the end.
    const running = await submit(repo, home, 'gate', join(flags, 'never'));
    await waitForStatus(repo, home, running, ['running']);

    ui = await startUi({ cwd: repo, home });
    browser = await launchChromium(chromium, OUT, { viewport: VIEWPORT });
    const { page } = browser;
    await page.goto(ui.url);
    await page.goto(`${ui.base}#/runs`);
    for (const run of [...finished, train, running]) await page.locator(`table[data-testid=runs] tr[data-run="${run}"]`).waitFor({ timeout: WAIT_MS });
    write(await browser.screenshot('runs', { fullPage: false }));

    await page.goto(`${ui.base}#/run/${train}`);
    await page.locator('[data-testid=diff] .diff-add').first().waitFor({ timeout: WAIT_MS });
    await page.locator('[data-testid=logs]').getByText('epoch 3').first().waitFor({ timeout: WAIT_MS });
    await page.locator('[data-testid=artifacts] a[data-download]').first().waitFor({ timeout: WAIT_MS });
    write(await browser.screenshot('run', { fullPage: false }));
  } finally {
    await browser?.close();
    await ui?.stop();
    await killAgents(home);
    removeAll(repo, home, flags);
  }
}

function write(path: string): void {
  process.stdout.write(`wrote ${path}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
