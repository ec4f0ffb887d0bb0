import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdirSync, openSync, writeSync, closeSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { saveTree } from '../common/artifacts/save.js';
import { restoreTree } from '../common/artifacts/restore.js';
import { LocalStore } from '../common/local/local-store.js';
const work = '/tmp/lb/w';
const t = async <T>(f: () => Promise<T> | T): Promise<[number, T]> => { const s = performance.now(); const v = await f(); return [performance.now() - s, v]; };
const which = process.argv[2] ?? 'big';
if (!existsSync(join(work, 'big/model.bin'))) {
  mkdirSync(join(work, 'big'), { recursive: true });
  const fd = openSync(join(work, 'big/model.bin'), 'w'); const b = randomBytes(16 << 20);
  for (let i = 0; i < 64; i++) { b.writeUInt32LE(i, 0); writeSync(fd, b); } closeSync(fd);
  for (let d = 0; d < 100; d++) { mkdirSync(join(work, 'small', `d${d}`), { recursive: true }); for (let f = 0; f < 100; f++) writeFileSync(join(work, 'small', `d${d}`, `f${f}.bin`), randomBytes(10240)); }
}
spawnSync('sync');
const src = join(work, which);
if (which === 'big') {
  const [h] = await t(() => new Promise<void>((res, rej) => { const h = createHash('sha256'); createReadStream(join(src, 'model.bin')).on('data', (d) => h.update(d)).on('end', () => { h.digest(); res(); }).on('error', rej); }));
  console.log('hash floor', h.toFixed(0));
}
const [c] = await t(() => { spawnSync('cp', ['-r', src, join(work, 'cp')]); }); rmSync(join(work, 'cp'), { recursive: true }); console.log('cp', c.toFixed(0));
for (let i = 0; i < 4; i++) {
  rmSync(join(work, 'store'), { recursive: true, force: true }); rmSync(join(work, 'out'), { recursive: true, force: true }); spawnSync('sync');
  const store = new LocalStore(join(work, 'store'));
  const [s, saved] = await t(() => saveTree(store, src)); spawnSync('sync');
  const r0 = process.resourceUsage(); const [r] = await t(() => restoreTree(store, saved.manifestSha, join(work, 'out'))); const r1 = process.resourceUsage(); spawnSync('sync');
  console.log('save', s.toFixed(0), 'restore', r.toFixed(0), 'cpu', ((r1.userCPUTime - r0.userCPUTime + r1.systemCPUTime - r0.systemCPUTime) / 1000).toFixed(0), 'vol/invol ctx', r1.voluntaryContextSwitches - r0.voluntaryContextSwitches, r1.involuntaryContextSwitches - r0.involuntaryContextSwitches);
}
