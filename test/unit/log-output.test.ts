import FakeTimers from '@sinonjs/fake-timers';
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { LogShipper } from '../../agent/log-shipper.js';
import { LocalStore } from '../../common/local/local-store.js';
import { encodeLogChunk, parseLogChunk } from '../../common/log-records.js';
import { CorruptRecordError } from '../../common/records/read.js';
import { runKeys } from '../../common/runs.js';
import { followRun } from '../../coordinator/follow.js';
import { removeAll, tempDir } from '../support/cli.js';
import { withTempStore } from '../support/temp-store.js';

const REPO = 'local/logs-test';

/** Everything `dstack logs` would print for a run, per stream, as bytes. */
async function replay(store: LocalStore, run: string): Promise<{ out: Buffer; err: Buffer }> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  await followRun(store, REPO, run, { follow: false, pollMs: 10, onRecord: (r) => (r.s === 'out' ? out : err).push(Buffer.from(r.d)) });
  return { out: Buffer.concat(out), err: Buffer.concat(err) };
}

describe('job output is bytes end to end', () => {
  const t = withTempStore('logs');

  const shipperFor = (run: string, flushMs = 100): LogShipper => new LogShipper(t.store, (seq) => runKeys.logChunk(REPO, run, 1, seq), flushMs);

  it('keeps a character split across two pipe reads whole', async () => {
    const text = Buffer.from('é😀\n', 'utf8');
    const shipper = shipperFor('split-1');
    // The emoji's four bytes arrive in two reads, as a pipe may deliver them.
    shipper.write('out', text.subarray(0, 4));
    shipper.write('out', text.subarray(4));
    await shipper.close();
    const { out } = await replay(t.store, 'split-1');
    expect(out.toString('utf8')).to.equal('é😀\n');
    expect(out.equals(text)).to.equal(true);
  });

  it('keeps random bytes exactly, across chunks, with stdout and stderr interleaved in order', async () => {
    const shipper = new LogShipper(t.store, (seq) => runKeys.logChunk(REPO, 'binary-1', 1, seq), 100, 64 * 1024);
    const outParts: Buffer[] = [];
    const order: string[] = [];
    for (let i = 0; i < 40; i++) {
      const part = randomBytes(7000 + i);
      outParts.push(part);
      shipper.write('out', part);
      shipper.write('err', `line ${i}\n`);
      order.push('out', 'err');
    }
    await shipper.close();
    expect((await t.store.list(runKeys.logs(REPO, 'binary-1'))).length).to.be.greaterThan(1);
    const seen: string[] = [];
    const out: Buffer[] = [];
    await followRun(t.store, REPO, 'binary-1', {
      follow: false,
      pollMs: 10,
      onRecord: (r) => {
        seen.push(r.s);
        if (r.s === 'out') out.push(Buffer.from(r.d));
      },
    });
    expect(Buffer.concat(out).equals(Buffer.concat(outParts))).to.equal(true);
    expect(seen).to.deep.equal(order);
  });

  it('stores output in order within the flush interval, and the rest on close', async () => {
    // The interval passes on a fake clock; the store's own I/O stays real.
    let puts = 0;
    let stored: () => void = () => undefined;
    const firstPut = new Promise<void>((resolve) => (stored = resolve));
    const watched = Object.assign(Object.create(t.store) as LocalStore, {
      put: (key: string, data: Buffer | string) => {
        puts++;
        return t.store.put(key, data).then(stored);
      },
    });
    const clock = FakeTimers.install({ toFake: ['setTimeout', 'clearTimeout'] });
    let shipper: LogShipper;
    try {
      shipper = new LogShipper(watched, (seq) => runKeys.logChunk(REPO, 'order-1', 1, seq), 100);
      shipper.write('out', 'one\n');
      shipper.write('err', 'two\n');
      clock.tick(99);
      expect(puts).to.equal(0);
      // The interval's flush: the chunk is on its way to the store (a later flush would fail here, not time out).
      await clock.tickAsync(1);
      expect(puts).to.equal(1);
    } finally {
      clock.uninstall();
    }
    await firstPut;
    expect((await t.store.list(runKeys.logs(REPO, 'order-1'))).length).to.equal(1);
    shipper.write('out', 'three\n');
    await shipper.close();
    const records: string[] = [];
    await followRun(t.store, REPO, 'order-1', { follow: false, pollMs: 10, onRecord: (r) => records.push(`${r.s}:${Buffer.from(r.d).toString()}`) });
    expect(records).to.deep.equal(['out:one\n', 'err:two\n', 'out:three\n']);
  });

  it('reads the JSON-lines chunks that agents stored before output was kept as bytes', async () => {
    const old = [
      { t: '2026-11-01T10:00:00.000Z', s: 'out', d: 'héllo\n' },
      { t: '2026-11-01T10:00:00.100Z', s: 'err', d: 'warn\n' },
    ];
    await t.store.put(`${runKeys.logs(REPO, 'old-1')}0001-00000000.jsonl`, old.map((r) => JSON.stringify(r)).join('\n') + '\n');
    await t.store.put(`${runKeys.logs(REPO, 'old-1')}0001-00000001.jsonl`, `${JSON.stringify({ t: '2026-11-01T10:00:01.000Z', s: 'out', d: 'bye\n' })}\n`);
    const { out, err } = await replay(t.store, 'old-1');
    expect(out.toString('utf8')).to.equal('héllo\nbye\n');
    expect(err.toString('utf8')).to.equal('warn\n');
    const since: string[] = [];
    await followRun(t.store, REPO, 'old-1', { follow: false, pollMs: 10, sinceMs: Date.parse('2026-11-01T10:00:00.050Z'), onRecord: (r) => since.push(Buffer.from(r.d).toString()) });
    expect(since).to.deep.equal(['warn\n', 'bye\n']);
  });

  it('shows every chunk but a damaged one, and one dstack line naming it', async () => {
    const shipper = shipperFor('damaged-1');
    for (const line of ['first\n', 'second\n', 'third\n']) {
      shipper.write('out', line);
      await shipper.flush();
    }
    await shipper.close();
    const keys = (await t.store.list(runKeys.logs(REPO, 'damaged-1'))).map((o) => o.key);
    expect(keys).to.have.length(3);
    await t.store.put(keys[1] ?? '', 'garbage \x00\xff not a chunk');
    const { out, err } = await replay(t.store, 'damaged-1');
    expect(out.toString()).to.equal('first\nthird\n');
    const lines = err.toString().trimEnd().split('\n');
    expect(lines).to.have.length(1);
    expect(lines[0]).to.match(/^dstack: /);
    expect(lines[0]).to.include(keys[1]);
  });
});

describe('following a run whose final status is damaged', () => {
  it('prints all the output, then fails with one error naming final.json', async () => {
    const dir = tempDir('logs');
    try {
      const store = new LocalStore(dir);
      const shipper = new LogShipper(store, (seq) => runKeys.logChunk(REPO, 'final-1', 1, seq));
      shipper.write('out', 'all of it\n');
      await shipper.close();
      await store.put(runKeys.final(REPO, 'final-1'), '{"status":');
      const out: string[] = [];
      const err = await followRun(store, REPO, 'final-1', { follow: true, pollMs: 10, onRecord: (r) => out.push(Buffer.from(r.d).toString()) }).catch((e: unknown) => e);
      expect(out).to.deep.equal(['all of it\n']);
      expect(err).to.be.instanceOf(CorruptRecordError);
      expect((err as Error).message).to.include(runKeys.final(REPO, 'final-1'));
    } finally {
      removeAll(dir);
    }
  });
});

describe('log chunk codec', () => {
  it('stores 5 MB of random bytes in about 5 MB, and gives them back', () => {
    const data = randomBytes(5_000_000);
    // 64 KiB pipe reads, each one frame.
    const records = [];
    for (let at = 0; at < data.length; at += 65536) records.push({ atMs: 1_700_000_000_000 + at, s: 'out' as const, d: data.subarray(at, at + 65536) });
    const chunk = encodeLogChunk(records);
    expect(chunk.length).to.be.lessThan(data.length * 1.01);
    const parsed = parseLogChunk(chunk);
    expect(parsed.problem).to.equal(undefined);
    expect(Buffer.concat(parsed.records.map((r) => r.d)).equals(data)).to.equal(true);
    expect(parsed.records[1]?.atMs).to.equal(1_700_000_000_000 + 65536);
  });

  it('gives the frames before a truncation, and says where it is', () => {
    const chunk = encodeLogChunk([
      { atMs: 1, s: 'out', d: Buffer.from('kept\n') },
      { atMs: 2, s: 'err', d: Buffer.from('cut short\n') },
    ]);
    const parsed = parseLogChunk(chunk.subarray(0, chunk.length - 3));
    expect(parsed.records.map((r) => r.d.toString())).to.deep.equal(['kept\n']);
    expect(parsed.problem).to.match(/truncated frame at byte \d+/);
  });

  it('refuses what is neither format', () => {
    expect(parseLogChunk(Buffer.from('hello')).problem).to.include('unknown header');
    expect(parseLogChunk(Buffer.from('{"t":1}\n')).problem).to.include('line 1');
  });
});
