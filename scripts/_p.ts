import { rmSync } from 'node:fs';
import { saveTree } from '../common/artifacts/save.js';
import { readManifest, restoreTree } from '../common/artifacts/restore.js';
import { LocalStore } from '../common/local/local-store.js';
rmSync('/tmp/lb/w/store2', { recursive: true, force: true });
const store = new LocalStore('/tmp/lb/w/store2');
const saved = await saveTree(store, '/tmp/lb/w/small');
let t = performance.now();
await readManifest(store, saved.manifestSha);
console.log('manifest', performance.now() - t);
for (let i = 0; i < 3; i++) {
  rmSync('/tmp/lb/w/out2', { recursive: true, force: true });
  t = performance.now();
  await restoreTree(store, saved.manifestSha, '/tmp/lb/w/out2');
  console.log('restore', performance.now() - t);
}
