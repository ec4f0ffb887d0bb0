import { Worker } from 'node:worker_threads';
const w = new Worker(`const { parentPort } = require('node:worker_threads');
parentPort.on('message', (m) => { console.log('w', m.buffer.byteLength, new Uint8Array(m.buffer)[0]); parentPort.postMessage({ buffer: m.buffer }, [m.buffer]); });`, { eval: true });
const b = Buffer.allocUnsafeSlow(8 << 20); b.fill(7);
console.log(b.buffer.byteLength, b.byteOffset);
w.on('message', (m) => { console.log('back', m.buffer.byteLength, new Uint8Array(m.buffer)[0]); w.terminate(); });
w.postMessage({ buffer: b.buffer }, [b.buffer]);
