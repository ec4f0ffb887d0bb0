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
    // Downloads: the median of 3, each from a disk with nothing left to write back (the disk here is
    // noisy, and a download must not pay for the one before it); fauxqs holds one side's data at a time.
    const medianOf3 = async (fn: () => Promise<unknown>, out: string): Promise<number> => {
      const ms: number[] = [];
      for (let i = 0; i < 3; i++) {
        execFileSync('sync');
        ms.push(await timed(fn));
        rmSync(out, { recursive: true, force: true });
      }
      return ms.sort((a, b) => a - b)[1] ?? NaN;
    };
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
      const cliOut = join(work, 'cli-out');
      const cliDownMs = await medianOf3(() => cli(['s3', 'cp', '--only-show-errors', ...cp, cliUrl, recursive ? cliOut : join(cliOut, 'model.bin')]), cliOut);
      await cli(['s3', 'rm', '--only-show-errors', '--recursive', 's3://bench/cli/']);
      const store = new S3Store({ s3: clients.s3, bucket: 'bench', prefix: 'ours/' });
      let manifestSha = '';
      execFileSync('sync');
      const oursUpMs = await timed(async () => (manifestSha = (await saveTree(store, src, { concurrency: 32 })).manifestSha));
      const oursOut = join(work, 'ours-out');
      const oursDownMs = await medianOf3(() => restoreTree(store, manifestSha, oursOut), oursOut);
      await store.delete((await store.list('')).map((o) => o.key));
      const c = recursive ? ' --recursive' : '';
      rows.push(`| artifact upload to S3 (fauxqs), ${label} | ${oursUpMs.toFixed(0)} ms | \`aws s3 cp${c}\` | ${cliUpMs.toFixed(0)} ms | ${(cliUpMs / oursUpMs).toFixed(1)}x faster |`);
      const ratio = (cliDownMs / oursDownMs).toFixed(1);
      rows.push(`| artifact download from S3 (fauxqs), ${label}, verified | ${oursDownMs.toFixed(0)} ms (${rate(bytes, oursDownMs)}) | \`aws s3 cp${c}\` | ${cliDownMs.toFixed(0)} ms (${rate(bytes, cliDownMs)}) | ${recursive ? `${ratio}x faster` : `${ratio}x its throughput`} |`);
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
