import { expect } from 'chai';
import { build, type OutputFile } from 'esbuild';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, join } from 'node:path';
import { openBrowser, type TestBrowser } from '../support/browser.js';
import { ROOT, removeAll, tempDir } from '../support/cli.js';

const WEB = join(ROOT, 'coordinator', 'ui', 'web');
/** Markup in a value: it must show as these characters, never run or become an element. */
const HOSTILE = '<img src=x onerror="window.pwned=1">';

/** The three pages alone (the app shell is ui-core's), picked by the hash. */
const ENTRY = `
import { render } from 'preact';
import { MachinesPage } from '${WEB}/machines.js';
import { CostPage } from '${WEB}/cost.js';
import { ServicesPage } from '${WEB}/services.js';
const page = location.hash.slice(2);
const root = document.getElementById('app');
if (root) render(page === 'cost' ? <CostPage /> : page === 'services' ? <ServicesPage /> : <MachinesPage />, root);
`;

/** Where the stand-in serves the pages, as `dstack ui` serves them below its secret prefix: absolute `/api/` URLs get 404. */
const PREFIX = '/s/stand-in/';

const day = (daysAgo: number): string => new Date(Date.now() - daysAgo * 86_400_000).toISOString().slice(0, 10);

/**
 * The Machines, Cost and Services pages in headless Chromium, against a stand-in server that
 * answers their APIs with the JSON of design15: the DOM contract the browser tests rely on, values
 * as text, the 5 s refresh, and chart.js loaded as its own chunk only by the cost page.
 */
describe('ui pages: machines, cost and services in a browser', function () {
  this.timeout(120_000);
  let dir: string;
  let server: Server;
  let base: string;
  let browser: TestBrowser | undefined;
  const served: string[] = [];
  const api: Record<string, unknown> = {};

  before(async function () {
    dir = tempDir('ui-pages');
    const entry = join(dir, 'entry.tsx');
    writeFileSync(entry, ENTRY);
    // As ui-core's build:ui bundles the app: ESM, split, preact's automatic JSX.
    const out = await build({ entryPoints: [entry], bundle: true, splitting: true, format: 'esm', target: 'es2022', jsx: 'automatic', jsxImportSource: 'preact', outdir: join(dir, 'out'), entryNames: 'app', write: false, nodePaths: [join(ROOT, 'node_modules')], logLevel: 'warning' });
    const files = new Map<string, OutputFile>(out.outputFiles.map((f) => [`/${basename(f.path)}`, f]));
    server = createServer((req, res) => {
      const full = (req.url ?? '/').split('?')[0] ?? '/';
      const path = full.startsWith(PREFIX) ? full.slice(PREFIX.length - 1) : `(outside the prefix) ${full}`;
      served.push(path);
      const file = files.get(path);
      if (path === '/') {
        res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><html><body><div id="app"></div><script type="module" src="app.js"></script></body></html>');
      } else if (file) {
        res.writeHead(200, { 'content-type': 'text/javascript' }).end(Buffer.from(file.contents));
      } else if (path in api) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(api[path]));
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}${PREFIX.slice(0, -1)}`;
    browser = await openBrowser(this, 'ui pages machines cost services');
  });
  after(async () => {
    await browser?.close();
    server?.closeAllConnections();
    await new Promise((r) => server?.close(r));
    removeAll(dir);
  });

  it('machines: agents, queues and the cost rate as text, refreshed every 5 s', async () => {
    const page = browser!.page;
    api['/api/machines'] = {
      agents: [
        { id: 'i-aaa', location: 'g5.xlarge in us-east-1a', state: 'running', profileId: 'gpu', heartbeatAgeMs: 7000, instanceType: 'g5.xlarge', market: 'spot', pricePerHour: 0.5 },
        { id: HOSTILE, location: 'pid 42', state: 'idle', profileId: null, heartbeatAgeMs: null, instanceType: null, market: null, pricePerHour: null },
      ],
      queues: [{ profileId: 'gpu', depth: 4 }],
      costRatePerHour: 0.5,
    };
    await page.goto(`${base}/?page=machines#/machines`);
    await page.waitForSelector('table[data-testid=agents] tr[data-agent=i-aaa]');
    const cells = await page.$$eval('table[data-testid=agents] tr[data-agent=i-aaa] td', (tds) => tds.map((td) => td.textContent));
    expect(cells).to.deep.equal(['i-aaa', 'g5.xlarge in us-east-1a', 'gpu', 'g5.xlarge', 'spot', 'running', '7s', '$0.5000/h']);
    expect(await page.$$eval('table[data-testid=agents] td[data-col=id]', (tds) => tds.map((td) => td.textContent))).to.deep.equal(['i-aaa', HOSTILE]);
    expect(await page.$$('table[data-testid=agents] img')).to.have.length(0);
    // Page-side code as strings: the test's own TypeScript has no DOM.
    expect(await page.evaluate('typeof window.pwned')).to.equal('undefined');
    expect(await page.textContent('[data-testid=queues] tr[data-profile=gpu]')).to.equal('gpu4');
    expect(await page.textContent('[data-testid=cost-rate]')).to.equal('$0.5000/h');
    await browser!.screenshot('machines');
    api['/api/machines'] = { agents: [], queues: [], costRatePerHour: 1.7 };
    await page.waitForFunction(`document.querySelector('[data-testid=cost-rate]')?.textContent === '$1.70/h'`, undefined, { timeout: 8000 });
    expect(await page.textContent('table[data-testid=agents] tbody')).to.equal('No agent runs now.');
    // chart.js is not loaded for this page.
    expect(served.filter((p) => p.startsWith('/chart'))).to.deep.equal([]);
    // An answer of another shape is one line on the page, not a broken table.
    api['/api/machines'] = { agents: 'none', queues: [], costRatePerHour: 1.7 };
    await page.waitForFunction(`document.querySelector('.machines .error')?.textContent?.startsWith('unexpected answer from api/machines: agents')`, undefined, { timeout: 8000 });
    expect(served.filter((p) => p.startsWith('(outside') && !p.endsWith(' /favicon.ico')), 'requests outside the prefix').to.deep.equal([]);
  });

  it('cost: a stacked bar chart (chart.js, its own chunk) and a table of the same numbers', async () => {
    const page = browser!.page;
    const days = Array.from({ length: 30 }, (_, i) => ({ day: day(29 - i), byWorkflow: {} as Record<string, number> }));
    days[29]!.byWorkflow = { train: 1.5, [HOSTILE]: 0.25 };
    days[28]!.byWorkflow = { eval: 2 };
    api['/api/cost'] = { days, total: 3.75 };
    await page.goto(`${base}/?page=cost#/cost`);
    await page.waitForSelector(`table[data-testid=cost-table] tr[data-day="${day(0)}"]`);
    expect(await page.$$('table[data-testid=cost-table] tbody tr')).to.have.length(30);
    expect(await page.$$eval('table[data-testid=cost-table] thead th', (ths) => ths.map((th) => th.textContent))).to.deep.equal(['Day', HOSTILE, 'eval', 'train', 'Total']);
    expect(await page.$$eval(`table[data-testid=cost-table] tr[data-day="${day(0)}"] td`, (tds) => tds.map((td) => td.textContent))).to.deep.equal([day(0), '$0.2500', '-', '$1.50', '$1.75']);
    expect(await page.textContent('[data-testid=cost-total]')).to.equal('$3.75');
    // The chart drew on its canvas: some pixel is no longer transparent.
    const drawn = `(() => {
      const c = document.querySelector('canvas[data-testid=cost-chart]');
      const px = c && c.width > 0 ? c.getContext('2d').getImageData(0, 0, c.width, c.height).data : [];
      return Array.prototype.some.call(px, (v, i) => i % 4 === 3 && v > 0);
    })()`;
    await page.waitForFunction(drawn, undefined, { timeout: 10_000 });
    expect(served.filter((p) => p.startsWith('/chart'))).to.have.length(1);
    expect(await page.$$('img')).to.have.length(0);
    await browser!.screenshot('cost');
  });

  it('services: a link per server or port, the token kept out of the text; an EC2 forward as text', async () => {
    const page = browser!.page;
    api['/api/services'] = {
      services: [
        { runName: 'mine-run-1', workflow: 'dev', provider: 'code', url: 'http://127.0.0.1:9000/?tkn=sekret', port: 9000 },
        { runName: 'mine-run-1', workflow: 'dev', provider: 'port', url: 'http://127.0.0.1:8080', port: 8080 },
        { runName: 'far-run-1', workflow: HOSTILE, provider: 'port', url: '(dstack attach far-run-1)', port: 8080 },
      ],
    };
    await page.goto(`${base}/?page=services#/services`);
    await page.waitForSelector('table[data-testid=services] a[data-link]');
    const links = await page.$$eval('table[data-testid=services] a[data-link]', (as) => as.map((a) => [a.getAttribute('href'), a.textContent]));
    expect(links).to.deep.equal([
      ['http://127.0.0.1:9000/?tkn=sekret', 'http://127.0.0.1:9000/?…'],
      ['http://127.0.0.1:8080', 'http://127.0.0.1:8080'],
    ]);
    expect(await page.textContent('table[data-testid=services] tr[data-run=far-run-1] td[data-col=link]')).to.equal('(dstack attach far-run-1)');
    expect(await page.textContent('table[data-testid=services] tr[data-run=far-run-1] td[data-col=workflow]')).to.equal(HOSTILE);
    expect(await page.$$('img')).to.have.length(0);
    await browser!.screenshot('services');
  });
});
