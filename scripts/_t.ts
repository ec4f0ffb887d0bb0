import { randomBytes } from 'node:crypto';
import { hashChunk } from '../common/artifacts/hash-pool.js';
import { sha256 } from '../common/hash.js';
const bufs = Array.from({ length: 6 }, () => { const b = Buffer.allocUnsafeSlow(8 << 20); randomBytes(8 << 20).copy(b); return b; });
const want = bufs.map((b) => sha256(b));
const got = await Promise.all(bufs.map((b) => hashChunk(b)));
got.forEach((g, i) => console.log(g.sha === want[i], sha256(g.data) === want[i]));
