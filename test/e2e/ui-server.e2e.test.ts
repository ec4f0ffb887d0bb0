import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { LogsSchema, RunDetailSchema, RunsPageSchema, TreeSchema } from '../../coordinator/ui/web/schemas.js';
import { dstack, killAgents, makeHome, makeRepo, removeAll, spawnCli, tempDir, waitFor, type SpawnedCli } from '../support/cli.js';

const WORKFLOWS = `workflows:
  - name: produce
    provider: bash
    commands:
      - mkdir -p out/sub
      - head -c 300000 /dev/urandom > out/sub/blob.bin
      - echo hello > out/hello.txt
      - printf 'plain \\033[31mred\\033[0m <b>bold?</b>\\n'
    artifacts:
      - path: out
`;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A GET or POST over plain node:http, so that the Host and Cookie headers are exactly what the test says. */
function call(url: string, o: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: o.method ?? 'GET', headers: o.headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

describe('dstack ui (the built CLI, local backend, one real run)', function () {
  this.timeout(120_000);
  let repo = '';
  let home = '';
  let downloads = '';
  let ui: SpawnedCli | undefined;
  let runName = '';
  let origin = '';
  let url = '';
  /** `http://127.0.0.1:PORT/s/<P>/`, where the login redirects. */
  let base = '';

  before(async () => {
    repo = makeRepo({ '.dstack/workflows.yaml': WORKFLOWS });
    home = makeHome();
    downloads = tempDir('ui-downloads');
    const run = await dstack(['run', 'produce'], { cwd: repo, home, timeoutMs: 90_000 });
    expect(run.code, run.stderr).to.equal(0);
    const ps = await dstack(['ps', '-a', '--json'], { cwd: repo, home });
    runName = (JSON.parse(ps.stdout) as Array<{ runName: string }>)[0]?.runName ?? '';
    const got = await dstack(['artifacts', 'download', runName, '-o', downloads], { cwd: repo, home });
    expect(got.code, got.stderr).to.equal(0);
    ui = spawnCli(['ui', '--no-open'], { cwd: repo, home });
    url = await waitFor(() => /^dstack ui: (http:\/\/127\.0\.0\.1:\d+\/\?token=[A-Za-z0-9_-]+)$/m.exec(ui?.out.stdout ?? '')?.[1], 30_000, `the URL line (stderr: ${ui.out.stderr})`);
    origin = new URL(url).origin;
    base = origin + String((await call(url)).headers.location ?? '');
  });

  after(async () => {
    if (ui && ui.child.exitCode === null) {
      ui.child.kill('SIGKILL');
      await ui.exited;
    }
    await killAgents(home);
    removeAll(repo, home, downloads);
  });

  const login = async (): Promise<string> => {
    const r = await call(url);
    expect(r.status).to.equal(302);
    return String(r.headers['set-cookie']?.[0] ?? '').split(';')[0] ?? '';
  };

  it('answers 401 without the token, 403 to a foreign Host, and serves the page and the runs with the cookie', async () => {
    expect((await call(`${base}api/runs`)).status).to.equal(401);
    expect(base).to.match(/\/s\/[A-Za-z0-9_-]{22}\/$/);
    const cookie = await login();
    expect((await call(`${base}api/runs`, { headers: { cookie, host: 'attacker.example' } })).status).to.equal(403);
    const page = await call(base, { headers: { cookie } });
    expect(page.status).to.equal(200);
    // Relative: the page and all it loads live below the prefix.
    expect(page.body.toString()).to.include('<script type="module" src="app.js"></script>');
    expect((await call(`${origin}/`, { headers: { cookie } })).status, 'the page outside the prefix').to.equal(401);
    const app = await call(`${base}app.js`, { headers: { cookie } });
    expect(app.status, 'the bundle is served from dist/ui').to.equal(200);
    // Parsed with the page's own schemas: the server answers what the page expects.
    const runs = RunsPageSchema.parse(JSON.parse((await call(`${base}api/runs`, { headers: { cookie } })).body.toString()));
    expect(runs.total).to.equal(1);
    expect(runs.workflows).to.deep.equal(['produce']);
    expect(runs.runs[0]).to.include({ runName, workflow: 'produce', status: 'done', attempt: 1 });
  });

  it('shows the run, its logs as text, and downloads an artifact file byte for byte (and refuses ..)', async () => {
    const cookie = await login();
    const detail = RunDetailSchema.parse(JSON.parse((await call(`${base}api/runs/${runName}`, { headers: { cookie } })).body.toString()));
    expect(detail.run.status).to.equal('done');
    expect(detail.artifacts).to.deep.equal([{ index: 0, path: 'out', files: 2, sizeBytes: 300_006 }]);
    expect(detail.attempts).to.have.length(1);
    // Read as the page does: from the cursor, until the server says the output is all there.
    let text = '';
    let cursor: string | null = null;
    for (let calls = 0; ; calls++) {
      expect(calls, "calls to read a finished run's output").to.be.below(5);
      const logs = LogsSchema.parse(JSON.parse((await call(`${base}api/runs/${runName}/logs${cursor === null ? '' : `?after=${cursor}`}`, { headers: { cookie } })).body.toString()));
      // Bytes, as the job wrote them (base64 in the answer): the page decodes them per stream.
      text += Buffer.concat(logs.records.map((r) => Buffer.from(r.data, 'base64'))).toString('utf8');
      cursor = logs.cursor;
      if (logs.done) break;
    }
    expect(text).to.include('plain \x1b[31mred\x1b[0m <b>bold?</b>');
    expect((await call(`${base}api/runs/${runName}/logs?after=..%2Frun.json`, { headers: { cookie } })).status, 'a cursor that is not a chunk name').to.equal(400);
    const tree = TreeSchema.parse(JSON.parse((await call(`${base}api/runs/${runName}/artifacts/0/tree`, { headers: { cookie } })).body.toString()));
    expect(tree.entries).to.deep.include({ path: 'sub/blob.bin', type: 'file', sizeBytes: 300_000 });
    const file = await call(`${base}api/runs/${runName}/artifacts/0/download?path=${encodeURIComponent('sub/blob.bin')}`, { headers: { cookie } });
    expect(file.status).to.equal(200);
    expect(file.headers['content-disposition']).to.equal("attachment; filename*=UTF-8''blob.bin");
    expect(file.body.equals(readFileSync(join(downloads, 'out', 'sub', 'blob.bin'))), 'the same bytes as `dstack artifacts download`').to.equal(true);
    const bad = await call(`${base}api/runs/${runName}/artifacts/0/download?path=${encodeURIComponent('sub/../../etc/passwd')}`, { headers: { cookie } });
    expect(bad.status).to.equal(400);
    const folder = await call(`${base}api/runs/${runName}/artifacts/0/download?path=sub&tar=1`, { headers: { cookie } });
    expect(folder.status).to.equal(200);
    // The tar holds sub/blob.bin: its 512-byte header names it, and its bytes follow.
    const tar = gunzipSync(folder.body);
    const at = tar.indexOf('sub/blob.bin');
    expect(at, 'sub/blob.bin in the tar').to.be.at.least(0);
    expect(tar.subarray(at + 512 - (at % 512), at + 512 - (at % 512) + 300_000).equals(file.body)).to.equal(true);
  });

  it('a --port already in use is one line that says so, exit code 2', async () => {
    const taken = Number(new URL(url).port);
    const r = await dstack(['ui', '--port', String(taken), '--no-open'], { cwd: repo, home });
    expect(r.code, r.stderr).to.equal(2);
    expect(r.stderr).to.equal(`--port ${taken}: 127.0.0.1:${taken} is in use; give another port, or --port 0 for a free one\n`);
  });

  it('ends with exit code 0 on SIGTERM, printing nothing but its URL line, even with listings queued', async () => {
    const cookie = await login();
    // One tab's event stream, and a burst of calls that each list the Store: the budget queues them.
    const events = request(`${base}api/events`, { headers: { cookie } }, (res) => res.resume());
    events.on('error', () => undefined);
    events.end();
    await new Promise((r) => setTimeout(r, 3_000));
    const burst = ['api/runs', 'api/runs?status=done', 'api/machines', 'api/services', 'api/cost?days=30', `api/runs/${runName}/logs`, 'api/runs?workflow=produce'];
    for (const path of burst) call(`${base}${path}`, { headers: { cookie } }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 100));
    ui?.child.kill('SIGTERM');
    expect(await ui?.exited).to.equal(0);
    events.destroy();
    expect(ui?.out.stdout).to.equal(`dstack ui: ${url}\n`);
    expect(ui?.out.stderr, 'what dstack ui printed on stderr').to.equal('');
  });
});
