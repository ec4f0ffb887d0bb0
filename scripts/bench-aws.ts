// Artifact upload to and download from S3 on a fauxqs server, against Debian's `aws s3 cp` of the same data
// to and from the same endpoint. fauxqs keeps objects in memory: each side's objects are deleted before the next.
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { restoreTree } from '../common/artifacts/restore.js';
import { saveTree } from '../common/artifacts/save.js';
import { S3Store } from '../common/aws/s3-store.js';
import { ensureAws } from '../common/aws/provision.js';
import { awsClients } from '../common/aws/setup.js';

/**
 * Downloads of the 1 GiB file per figure (BENCH_AWS_N): 9 by default, ours and awscli's in turn. Both
 * vary by 2x from run to run here (how fast the kernel finds pages for the written file), so 5 made a
 * median that changed from run to run of the bench.
 */
const DOWNLOAD_RUNS = Number(process.env.BENCH_AWS_N ?? 9);

async function timed(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

export async function benchAws(work: string): Promise<string[]> {
  const aws = existsSync('/usr/bin/aws') ? '/usr/bin/aws' : undefined;
  if (!aws) return ['| S3 upload figures | skipped: Debian awscli is not installed (`apt-get install awscli`) | | | |'];
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
  process.env.AWS_ACCESS_KEY_ID = 'test';
  process.env.AWS_SECRET_ACCESS_KEY = 'test';
  // fauxqs runs in its own process, so that its work is not counted against either uploader.
  const server = await startServer();
  const rows: string[] = [];
  try {
    const settings = { region: 'us-east-1', bucket: 'bench', queuePrefix: 'bench', endpoints: { sqs: server.address, s3: server.address }, maxReceives: 3 };
    const clients = awsClients(settings);
    await ensureAws(clients, settings);
    // Asynchronous: fauxqs answers from this same process, so a blocking spawn would starve it.
    const cli = (args: string[]): Promise<void> =>
      new Promise((resolve, reject) => {
        const child = spawn(aws, ['--endpoint-url', server.address, '--region', 'us-east-1', ...args], { env: { ...process.env, AWS_PAGER: '' }, stdio: ['ignore', 'ignore', 'pipe'] });
        let err = '';
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`aws ${args.join(' ')} failed (${code}): ${err}`))));
      });
    const big = join(work, 'big');
    mkdirSync(big, { recursive: true });
    const fd = openSync(join(big, 'model.bin'), 'w');
    for (let i = 0; i < 64; i++) writeSync(fd, randomBytes(16 * 1024 * 1024));
    closeSync(fd);
    const small = join(work, 'small');
    for (let d = 0; d < 100; d++) {
      mkdirSync(join(small, `d${d}`), { recursive: true });
      for (let f = 0; f < 100; f++) writeFileSync(join(small, `d${d}`, `f${f}.bin`), randomBytes(10 * 1024));
    }
    // Downloads: the median of DOWNLOAD_RUNS, ours and awscli's taken in turn (aws, ours, aws, ours…) so
    // that the machine's drift (the disk here is noisy) falls on both alike; each starts from a disk with
    // nothing left to write back, so that a download does not pay for the one before it.
    const interleaved = async (n: number, a: () => Promise<unknown>, aOut: string, b: () => Promise<unknown>, bOut: string): Promise<[number[], number[]]> => {
      const as: number[] = [];
      const bs: number[] = [];
      for (let i = 0; i < n; i++) {
        for (const [fn, out, into] of [[a, aOut, as], [b, bOut, bs]] as const) {
          execFileSync('sync');
          into.push(await timed(fn));
          rmSync(out, { recursive: true, force: true });
        }
      }
      return [as, bs];
    };
    const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? NaN;
    const each = (xs: number[]): string => `(${xs.map((x) => x.toFixed(0)).join(', ')})`;
    const rate = (bytes: number, ms: number): string => `${((bytes / 2 ** 20) / (ms / 1000)).toFixed(0)} MiB/s`;
    for (const [label, src, recursive, bytes] of [
      ['one 1 GiB file', big, false, 2 ** 30],
      ['10,000 files of 10 KiB', small, true, 10_000 * 10 * 1024],
    ] as const) {
      const cp = recursive ? ['--recursive'] : [];
      const cliSrc = recursive ? src : join(src, 'model.bin');
      const cliUrl = recursive ? 's3://bench/cli/' : 's3://bench/cli/model.bin';
      execFileSync('sync');
      const cliUpMs = await timed(() => cli(['s3', 'cp', '--only-show-errors', ...cp, cliSrc, cliUrl]));
      const store = new S3Store({ s3: clients.s3, bucket: 'bench', prefix: 'ours/' });
      let manifestSha = '';
      execFileSync('sync');
      const oursUpMs = await timed(async () => (manifestSha = (await saveTree(store, src, { concurrency: 32 })).manifestSha));
      const cliOut = join(work, 'cli-out');
      const oursOut = join(work, 'ours-out');
      // awscli takes about 25 s for the 10,000 files: 3 runs of those.
      const runs = recursive ? Math.min(3, DOWNLOAD_RUNS) : DOWNLOAD_RUNS;
      const [cliDowns, oursDowns] = await interleaved(
        runs,
        () => cli(['s3', 'cp', '--only-show-errors', ...cp, cliUrl, recursive ? cliOut : join(cliOut, 'model.bin')]),
        cliOut,
        () => restoreTree(store, manifestSha, oursOut),
        oursOut,
      );
      const cliDownMs = median(cliDowns);
      const oursDownMs = median(oursDowns);
      await cli(['s3', 'rm', '--only-show-errors', '--recursive', 's3://bench/cli/']);
      await store.delete((await store.list('')).map((o) => o.key));
      const c = recursive ? ' --recursive' : '';
      rows.push(`| artifact upload to S3 (fauxqs), ${label} | ${oursUpMs.toFixed(0)} ms | \`aws s3 cp${c}\` | ${cliUpMs.toFixed(0)} ms | ${(cliUpMs / oursUpMs).toFixed(1)}x faster |`);
      const ratio = (cliDownMs / oursDownMs).toFixed(1);
      rows.push(`| artifact download from S3 (fauxqs), ${label}, every chunk verified, median of ${runs} taken in turn with awscli's ${each(oursDowns)} | ${oursDownMs.toFixed(0)} ms (${rate(bytes, oursDownMs)}) | \`aws s3 cp${c}\` ${each(cliDowns)} | ${cliDownMs.toFixed(0)} ms (${rate(bytes, cliDownMs)}) | ${recursive ? `${ratio}x faster` : `${ratio}x its throughput`} |`);
    }
  } finally {
    server.stop();
  }
  return rows;
}

async function startServer(): Promise<{ address: string; stop: () => void }> {
  const code = `import('fauxqs').then(async ({ startFauxqs }) => { const s = await startFauxqs({ port: 0, logger: false }); process.stdout.write(s.address + '\\n'); })`;
  const child = spawn(process.execPath, ['-e', code], { cwd: join(import.meta.dirname, '..'), stdio: ['ignore', 'pipe', 'inherit'] });
  const address = await new Promise<string>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()));
    child.once('exit', (c) => reject(new Error(`fauxqs exited (${c})`)));
  });
  return { address, stop: () => void child.kill('SIGKILL') };
}
