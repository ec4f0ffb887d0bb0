// Artifact save/restore figures for `npm run bench`: the 1 GiB file against the hash floor (Node's
// streamed sha256 of the same file, the least a verified restore must do), the small files against
// `cp -r`. Each figure is the median of BENCH_ARTIFACTS_N runs (3 by default): the disk is noisy.
import { createHash, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { createReadStream, mkdirSync, openSync, writeSync, closeSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { HashCache, saveTree } from '../common/artifacts/save.js';
import { restoreTree } from '../common/artifacts/restore.js';
import { LocalStore } from '../common/local/local-store.js';

const RUNS = Number(process.env.BENCH_ARTIFACTS_N ?? 3);

async function timed<T>(fn: () => Promise<T> | T): Promise<[number, T]> {
  const t = process.hrtime.bigint();
  const v = await fn();
  return [Number(process.hrtime.bigint() - t) / 1e6, v];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

function cp(from: string, to: string): void {
  const r = spawnSync('cp', ['-r', from, to]);
  if (r.status !== 0) throw new Error(`cp failed: ${r.stderr.toString()}`);
}

/** Node's streamed sha256 of a file: what a verified restore cannot beat on one core. */
function hashFile(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (d) => h.update(d))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

/** Syncs and drops nothing (no root needed): `sync` keeps dirty pages from one step spilling into the next. */
function settle(): void {
  spawnSync('sync');
}

function clear(...paths: string[]): void {
  for (const p of paths) rmSync(p, { recursive: true, force: true });
  settle();
}

const ms = (x: number): string => `${x.toFixed(0)} ms`;

/** Every run's figure, for the disk's noise to show. */
const runs = (xs: number[]): string => `(${xs.map((x) => x.toFixed(0)).join(', ')})`;

export async function benchArtifacts(work: string): Promise<string[]> {
  const rows: string[] = [];
  const big = join(work, 'big');
  mkdirSync(big, { recursive: true });
  const fd = openSync(join(big, 'model.bin'), 'w');
  // Random throughout, so that no chunk repeats (a model's weights do not dedupe): every chunk is stored and written.
  for (let i = 0; i < 64; i++) writeSync(fd, randomBytes(16 * 1024 * 1024));
  closeSync(fd);
  const small = join(work, 'small');
  for (let d = 0; d < 100; d++) {
    mkdirSync(join(small, `d${d}`), { recursive: true });
    for (let f = 0; f < 100; f++) writeFileSync(join(small, `d${d}`, `f${f}.bin`), randomBytes(10 * 1024));
  }
  settle();
  for (const [label, src, kind] of [
    ['one 1 GiB file', big, 'big'],
    ['10,000 files of 10 KiB', small, 'small'],
  ] as const) {
    // Each run writes into folders of its own. The 10,000-file runs' folders are removed only after
    // the last run: on ext4, creating files just after thousands were deleted is slowed by the
    // deletions, whichever tool creates them. The 1 GiB runs' folders (a few hundred files, 3 GiB)
    // go after each run, so that the disk and the page cache hold one run's worth at a time.
    const storeDir = (i: number): string => join(work, `store-${kind}-${i}`);
    const copy = (i: number): string => join(work, `cp-copy-${kind}-${i}`);
    const restored = (i: number): string => join(work, `restored-${kind}-${i}`);
    const floor: number[] = [];
    const cps: number[] = [];
    const saves: number[] = [];
    const restores: number[] = [];
    // One untimed round of each first: the first save of small files in a process ran ~25% slower than
    // the next ones (code not yet compiled), which a long-lived agent pays once, not at every job. Its
    // folders go with the others, after the last run (see above).
    const warm = join(work, `warm-${kind}`);
    {
      if (kind === 'big') await hashFile(join(big, 'model.bin'));
      mkdirSync(warm, { recursive: true });
      cp(src, join(warm, 'cp'));
      const s = await saveTree(new LocalStore(join(warm, 'store')), src);
      await restoreTree(new LocalStore(join(warm, 'store')), s.manifestSha, join(warm, 'restored'));
      if (kind === 'big') clear(warm);
      else settle();
    }
    for (let i = 0; i < RUNS; i++) {
      if (kind === 'big') floor.push((await timed(() => hashFile(join(big, 'model.bin'))))[0]);
      cps.push((await timed(() => cp(src, copy(i))))[0]);
      settle();
      const [saveMs, s] = await timed(() => saveTree(new LocalStore(storeDir(i)), src));
      saves.push(saveMs);
      settle();
      restores.push((await timed(() => restoreTree(new LocalStore(storeDir(i)), s.manifestSha, restored(i))))[0]);
      settle();
      if (kind === 'big') clear(copy(i), restored(i), ...(i > 0 ? [storeDir(i)] : []));
    }
    const store = new LocalStore(storeDir(0));
    const cache = new HashCache();
    // The first save with this cache fills it; the second is the re-save of the same job.
    await saveTree(store, src, { cache });
    const [resaveMs, again] = await timed(() => saveTree(store, src, { cache }));
    const [coldResaveMs, cold] = await timed(() => saveTree(store, src));
    if (again.uploadedBytes !== 0 || cold.uploadedBytes !== 0) throw new Error('an unchanged re-save uploaded data');
    const saveMs = median(saves);
    const restoreMs = median(restores);
    const [baseName, baseMs] = kind === 'big' ? ['hash floor (Node streamed sha256)', median(floor)] : ['`cp -r`', median(cps)];
    if (kind === 'big') rows.push(`| hash floor: Node's streamed sha256 of ${label} | ${ms(baseMs)} | \`cp -r\` | ${ms(median(cps))} | ${(baseMs / median(cps)).toFixed(1)}x |`);
    const baseRuns = runs(kind === 'big' ? floor : cps);
    rows.push(`| save ${label} (local store), median of ${RUNS} ${runs(saves)} | ${ms(saveMs)} | ${baseName} ${baseRuns} | ${ms(baseMs)} | ${(saveMs / baseMs).toFixed(2)}x |`);
    rows.push(`| restore ${label} (every chunk's hash checked), median of ${RUNS} ${runs(restores)} | ${ms(restoreMs)} | ${baseName} ${baseRuns} | ${ms(baseMs)} | ${(restoreMs / baseMs).toFixed(2)}x |`);
    rows.push(`| re-save ${label}, unchanged, same job (hash cache) | ${ms(resaveMs)} | first save | ${ms(saveMs)} | ${((resaveMs / saveMs) * 100).toFixed(1)}% |`);
    rows.push(`| re-save ${label}, unchanged, new job (re-hash, no upload) | ${ms(coldResaveMs)} | first save | ${ms(saveMs)} | ${((coldResaveMs / saveMs) * 100).toFixed(1)}% |`);
    for (let i = 0; i < RUNS; i++) clear(storeDir(i), copy(i), restored(i));
    clear(warm);
  }
  return rows;
}
