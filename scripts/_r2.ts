import { rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { restoreTree } from '../common/artifacts/restore.js';
import { LocalStore } from '../common/local/local-store.js';
import { readFileSync } from 'node:fs';
const store = new LocalStore('/tmp/lb/w/store3');
const sha = process.argv[2]!;
for (let i = 0; i < 3; i++) {
  rmSync('/tmp/lb/w/out3', { recursive: true, force: true }); spawnSync('sync');
  const r0 = process.resourceUsage();
  const t = performance.now();
  await restoreTree(store, sha, '/tmp/lb/w/out3');
  const r1 = process.resourceUsage();
  console.log('restore', (performance.now() - t).toFixed(0), 'user', ((r1.userCPUTime - r0.userCPUTime) / 1000).toFixed(0), 'sys', ((r1.systemCPUTime - r0.systemCPUTime) / 1000).toFixed(0), 'minflt', r1.minorPageFault - r0.minorPageFault);
}
