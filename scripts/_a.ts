import { openSync, readSync, closeSync } from 'node:fs';
const fd = openSync('/tmp/lb/w/big/model.bin', 'r');
for (let k = 0; k < 3; k++) {
  let t = performance.now();
  for (let i = 0; i < 128; i++) { const b = Buffer.allocUnsafeSlow(8 << 20); readSync(fd, b, 0, b.length, i * (8 << 20)); }
  const fresh = performance.now() - t;
  const b = Buffer.allocUnsafeSlow(8 << 20);
  t = performance.now();
  for (let i = 0; i < 128; i++) readSync(fd, b, 0, b.length, i * (8 << 20));
  console.log('fresh', fresh.toFixed(0), 'reused', (performance.now() - t).toFixed(0));
}
closeSync(fd);
