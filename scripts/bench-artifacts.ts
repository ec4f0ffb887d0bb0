// Artifact save/restore figures for `npm run bench`, each against `cp -r` of the same tree.
import { spawnSync } from 'node:child_process';
import { mkdirSync, openSync, writeSync, closeSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { HashCache, saveTree } from '../common/artifacts/save.js';
import { restoreTree } from '../common/artifacts/restore.js';
import { LocalStore } from '../common/local/local-store.js';

async function timed<T>(fn: () => Promise<T> | T): Promise<[number, T]> {
  const t = process.hrtime.bigint();
  const v = await fn();
  return [Number(process.hrtime.bigint() - t) / 1e6, v];
}

function cp(from: string, to: string): void {
  const r = spawnSync('cp', ['-r', from, to]);
  if (r.status !== 0) throw new Error(`cp failed: ${r.stderr.toString()}`);
}

/** Syncs and drops nothing (no root needed): `sync` keeps dirty pages from one step spilling into the next. */
function settle(): void {
  spawnSync('sync');
}

export async function benchArtifacts(work: string): Promise<string[]> {
  const rows: string[] = [];
  const big = join(work, 'big');
  mkdirSync(big, { recursive: true });
  const fd = openSync(join(big, 'model.bin'), 'w');
  const block = randomBytes(16 * 1024 * 1024);
  for (let i = 0; i < 64; i++) {
    block.writeUInt32LE(i, 0);
    writeSync(fd, block);
  }
  closeSync(fd);
  const small = join(work, 'small');
  for (let d = 0; d < 100; d++) {
    mkdirSync(join(small, `d${d}`), { recursive: true });
    for (let f = 0; f < 100; f++) writeFileSync(join(small, `d${d}`, `f${f}.bin`), randomBytes(10 * 1024));
  }
  settle();
  for (const [label, src] of [
    ['one 1 GiB file', big],
    ['10,000 files of 10 KiB', small],
  ] as const) {
    const store = new LocalStore(join(work, `store-${src.endsWith('big') ? 'big' : 'small'}`));
    const cache = new HashCache();
    const [cpMs] = await timed(() => cp(src, join(work, 'cp-copy')));
    settle();
    const [saveMs, saved] = await timed(() => saveTree(store, src, { cache }));
    settle();
    const [restoreMs] = await timed(() => restoreTree(store, saved.manifestSha, join(work, 'restored')));
    settle();
    const [resaveMs, again] = await timed(() => saveTree(store, src, { cache }));
    const [coldResaveMs, cold] = await timed(() => saveTree(store, src));
    if (again.uploadedBytes !== 0 || cold.uploadedBytes !== 0) throw new Error('an unchanged re-save uploaded data');
    rows.push(`| save ${label} (local store) | ${saveMs.toFixed(0)} ms | \`cp -r\` | ${cpMs.toFixed(0)} ms | ${(saveMs / cpMs).toFixed(1)}x |`);
    rows.push(`| restore ${label} (hashes checked) | ${restoreMs.toFixed(0)} ms | \`cp -r\` | ${cpMs.toFixed(0)} ms | ${(restoreMs / cpMs).toFixed(1)}x |`);
    rows.push(`| re-save ${label}, unchanged, same job (hash cache) | ${resaveMs.toFixed(0)} ms | first save | ${saveMs.toFixed(0)} ms | ${((resaveMs / saveMs) * 100).toFixed(1)}% |`);
    rows.push(`| re-save ${label}, unchanged, new job (re-hash, no upload) | ${coldResaveMs.toFixed(0)} ms | first save | ${saveMs.toFixed(0)} ms | ${((coldResaveMs / saveMs) * 100).toFixed(1)}% |`);
    rmSync(join(work, 'cp-copy'), { recursive: true, force: true });
    rmSync(join(work, 'restored'), { recursive: true, force: true });
    rmSync(join(work, `store-${src.endsWith('big') ? 'big' : 'small'}`), { recursive: true, force: true });
  }
  return rows;
}
