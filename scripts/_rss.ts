import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { restoreTree } from '../common/artifacts/restore.js';
import { saveTree } from '../common/artifacts/save.js';
import { S3Store } from '../common/aws/s3-store.js';
import { ensureAws } from '../common/aws/provision.js';
import { awsClients } from '../common/aws/setup.js';
const hwm = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]) / 1024;
async function main() {
  process.env.AWS_ACCESS_KEY_ID = 'test'; process.env.AWS_SECRET_ACCESS_KEY = 'test';
  const code = `import('fauxqs').then(async ({ startFauxqs }) => { const s = await startFauxqs({ port: 0, logger: false }); process.stdout.write(s.address + '\\n'); })`;
  const child = spawn(process.execPath, ['-e', code], { cwd: '/work/main', stdio: ['ignore', 'pipe', 'inherit'] });
  const address = await new Promise<string>((r) => child.stdout.once('data', (d: Buffer) => r(d.toString().trim())));
  const settings = { region: 'us-east-1', bucket: 'bench', queuePrefix: 'bench', endpoints: { sqs: address, s3: address }, maxReceives: 3 };
  const clients = awsClients(settings);
  await ensureAws(clients, settings);
  const work = '/tmp/rssw'; rmSync(work, { recursive: true, force: true }); mkdirSync(join(work, 'big'), { recursive: true });
  const fd = openSync(join(work, 'big', 'model.bin'), 'w');
  for (let i = 0; i < 64; i++) writeSync(fd, randomBytes(16 * 1024 * 1024));
  closeSync(fd);
  const store = new S3Store({ s3: clients.s3, bucket: 'bench', prefix: 'ours/' });
  const { manifestSha } = await saveTree(store, join(work, 'big'), { concurrency: 32 });
  writeFileSync('/proc/self/clear_refs', '5');
  const before = hwm();
  for (let r = 0; r < 2; r++) {
    writeFileSync('/proc/self/clear_refs', '5');
    let peak = { rss: 0, heap: 0, ab: 0, ext: 0 };
    const timer = setInterval(() => { const m = process.memoryUsage(); if (m.rss > peak.rss) peak = { rss: m.rss >> 20, heap: m.heapUsed >> 20, ab: m.arrayBuffers >> 20, ext: m.external >> 20 }; if (m.rss >> 20 > peak.rss) peak.rss = m.rss >> 20; }, 5);
    const t = performance.now();
    await restoreTree(store, manifestSha, join(work, 'out'));
    clearInterval(timer); console.log('main at peak', JSON.stringify(peak));
    console.log(`restore ${(performance.now() - t).toFixed(0)} ms, VmHWM ${hwm().toFixed(0)} MB (before ${before.toFixed(0)})`);
    rmSync(join(work, 'out'), { recursive: true, force: true });
  }
  child.kill('SIGKILL'); process.exit(0);
}
main();
