import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { ROOT, tempDir } from './cli.js';
import { requireTool, type SkippableContext } from './tools.js';

/** Where tests keep what they produce for people to look at (screenshots): `test-output/<test>/`. */
export const TEST_OUTPUT = join(ROOT, 'test-output');

/**
 * Debian's chromium as a test runs it: headless, no sandbox (tests may run as root), nothing that
 * calls home (no QUIC, sync, component updates or background fetches), so that a page's traffic is
 * only what the test serves.
 */
export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** A headless Chromium with one page, a fresh profile, and a folder for screenshots. */
export interface TestBrowser {
  page: Page;
  /** `test-output/<test>/`: this test's output folder. */
  outputDir: string;
  /** Saves the page as `<outputDir>/<name>.png` (the whole page, or the viewport with `fullPage: false`) and returns the path. */
  screenshot(name: string, o?: { fullPage?: boolean }): Promise<string>;
  /** Ends the browser and removes its profile. */
  close(): Promise<void>;
}

/** The folder name of a test's output: its full title, in letters, digits and dashes. */
export function outputFolderName(title: string): string {
  return (
    title
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 120) || 'test'
  );
}

/** How a browser is launched: the viewport in CSS pixels (playwright's default, 1280×720, when absent). */
export interface LaunchOptions {
  viewport?: { width: number; height: number };
}

/**
 * Starts the chromium at `executablePath` headless with CHROMIUM_FLAGS, in a fresh profile, with one
 * page whose screenshots go to `outputDir`. Needs no mocha: scripts (`npm run screenshots`) use it too.
 */
export async function launchChromium(executablePath: string, outputDir: string, o: LaunchOptions = {}): Promise<TestBrowser> {
  mkdirSync(outputDir, { recursive: true });
  const profile = tempDir('chromium-profile');
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath,
      headless: true,
      args: CHROMIUM_FLAGS,
      timeout: 60_000,
      ...(o.viewport ? { viewport: o.viewport } : {}),
    });
  } catch (e) {
    rmSync(profile, { recursive: true, force: true });
    throw e;
  }
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    page,
    outputDir,
    screenshot: async (shot, so) => {
      const path = join(outputDir, `${shot}.png`);
      await page.screenshot({ path, fullPage: so?.fullPage ?? true });
      return path;
    },
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Starts Debian's chromium (/usr/bin/chromium) through playwright-core. Skips the test when chromium
 * is absent (fails under CI): see requireTool. `title` names the output folder (default: the test's full title).
 */
export async function openBrowser(ctx: SkippableContext & { currentTest?: { fullTitle(): string } | undefined }, title?: string, o: LaunchOptions = {}): Promise<TestBrowser> {
  const executablePath = requireTool(ctx, 'chromium');
  const name = title ?? ctx.currentTest?.fullTitle() ?? (ctx.test && 'fullTitle' in ctx.test ? (ctx.test as { fullTitle(): string }).fullTitle() : 'browser');
  return launchChromium(executablePath, join(TEST_OUTPUT, outputFolderName(name)), o);
}
