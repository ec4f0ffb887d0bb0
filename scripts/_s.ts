import { rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { saveTree } from '../common/artifacts/save.js';
import { restoreTree } from '../common/artifacts/restore.js';
import { LocalStore } from '../common/local/local-store.js';
const src = '/tmp/lb/w/small';
for (let i = 0; i < 3; i++) {
  rmSync('/tmp/lb/w/store4', { recursive: true, force: true }); rmSync('/tmp/lb/w/cp4', { recursive: true, force: true }); rmSync('/tmp/lb/w/out4', { recursive: true, force: true }); spawnSync('sync');
  let t = performance.now(); spawnSync('cp', ['-r', src, '/tmp/lb/w/cp4']); const c = performance.now() - t; spawnSync('sync');
  const store = new LocalStore('/tmp/lb/w/store4');
  t = performance.now(); const saved = await saveTree(store, src); const s = performance.now() - t; spawnSync('sync');
  t = performance.now(); await restoreTree(store, saved.manifestSha, '/tmp/lb/w/out4'); const r = performance.now() - t;
  console.log(`cp ${c.toFixed(0)} save ${s.toFixed(0)} restore ${r.toFixed(0)}`);
}
