// Receives from a LocalQueue until it is empty, printing each body it acked.
import { LocalQueue } from '../../common/local/local-queue.js';

const q = new LocalQueue({ root: process.argv[2] ?? '', name: 'jobs', maxReceives: 3 });
for (;;) {
  const m = await q.receive({ waitMs: 300, visibilityMs: 10_000 });
  if (!m) break;
  await new Promise((r) => setTimeout(r, 5));
  await q.ack(m.receipt);
  process.stdout.write(`${m.body}\n`);
}
