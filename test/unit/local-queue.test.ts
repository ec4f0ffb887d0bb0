import { expect } from 'chai';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LocalQueue } from '../../common/local/local-queue.js';
import { removeAll, tempDir } from '../support/cli.js';

describe('LocalQueue with a corrupt message file', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir('queue-corrupt');
  });
  afterEach(() => removeAll(dir));

  it('quarantines the bad file with one log line and still delivers the good messages', async () => {
    const lines: string[] = [];
    const q = new LocalQueue({ root: dir, name: 'jobs', maxReceives: 3, pollMs: 50, warn: (l) => lines.push(l) });
    await q.send('first');
    // Sorts before the good message, so the old code met it first.
    writeFileSync(join(dir, 'jobs', '000000000000000-garbage.json'), '{"id": "half a mess');
    writeFileSync(join(dir, 'jobs', '000000000000001-wrongshape.json'), '{"hello": 1}');
    await q.send('second');
    const got: string[] = [];
    for (let i = 0; i < 2; i++) {
      const m = await q.receive({ waitMs: 1000, visibilityMs: 5000 });
      expect(m, `message ${i}`).to.not.equal(undefined);
      got.push(m!.body);
      await q.ack(m!.receipt);
    }
    // Two sends in one millisecond may come out in either order.
    expect(got.sort()).to.deep.equal(['first', 'second']);
    expect(readdirSync(join(dir, 'jobs-quarantine')).sort()).to.deep.equal(['000000000000000-garbage.json', '000000000000001-wrongshape.json']);
    expect(readdirSync(join(dir, 'jobs'))).to.deep.equal([]);
    expect(lines).to.have.length(2);
    expect(lines[0]).to.contain('000000000000000-garbage.json').and.contain('jobs-quarantine');
    expect(await q.counts()).to.deep.equal({ visible: 0, inFlight: 0, dead: 0 });
  });
});
