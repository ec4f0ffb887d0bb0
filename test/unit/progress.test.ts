import { expect } from 'chai';
import { describeTransfer, formatDuration, TransferProgress } from '../../common/progress.js';

const MB = 1024 * 1024;

/** A progress meter on a clock the test moves, and what it wrote. */
function meter(mode: 'terminal' | 'log', totalBytes: number): { p: TransferProgress; out: string[]; at: (ms: number, bytes: number) => void } {
  let t = 1_000_000;
  const out: string[] = [];
  const p = new TransferProgress({ label: 'downloading data', totalBytes, mode, write: (s) => out.push(s), now: () => t });
  return { p, out, at: (ms, bytes) => ((t = 1_000_000 + ms), p.update(bytes)) };
}

describe('transfer progress', () => {
  it('says bytes, rate and time left', () => {
    expect(describeTransfer(400 * MB, 1000 * MB, 4000)).to.equal('400.0 MB of 1000.0 MB (40%), 100.0 MB/s, 6 s left');
    expect(describeTransfer(3 * MB, 0, 2000)).to.equal('3.0 MB, 1.5 MB/s');
    expect(formatDuration(75_000)).to.equal('1 min 15 s');
    expect(formatDuration(3_720_000)).to.equal('1 h 2 min');
  });

  it('on a terminal: nothing for the first 2 s, then one line redrawn in place, cleared at the end', () => {
    const m = meter('terminal', 100 * MB);
    m.at(500, 10 * MB);
    m.at(1900, 30 * MB);
    m.p.end();
    expect(m.out).to.deep.equal([]);
    const n = meter('terminal', 100 * MB);
    n.at(2000, 40 * MB);
    n.at(2050, 41 * MB);
    n.at(3000, 60 * MB);
    n.p.end();
    expect(n.out).to.deep.equal([
      '\rdownloading data: 40.0 MB of 100.0 MB (40%), 20.0 MB/s, 3 s left\x1b[K',
      '\rdownloading data: 60.0 MB of 100.0 MB (60%), 20.0 MB/s, 2 s left\x1b[K',
      '\r\x1b[K',
    ]);
  });

  it('on a terminal: a line wider than the terminal is cut to fit, so that it redraws in place', () => {
    const out: string[] = [];
    let t = 0;
    const p = new TransferProgress({ label: 'downloading data', totalBytes: 100 * MB, mode: 'terminal', columns: 40, write: (s) => out.push(s), now: () => t });
    t = 2500;
    p.update(50 * MB);
    expect(out).to.deep.equal(['\rdownloading data: 50.0 MB of 100.0 MB …\x1b[K']);
  });

  it('in a log: a line every 10% or 10 s, whichever is rarer', () => {
    // Fast: 10% every second, so a line every 10 s.
    const fast = meter('log', 1000 * MB);
    for (let s = 1; s <= 25; s++) fast.at(s * 1000, Math.min(1000, s * 40) * MB);
    fast.p.end();
    expect(fast.out).to.deep.equal([
      'dstack: downloading data: 400.0 MB of 1000.0 MB (40%), 40.0 MB/s, 15 s left\n',
      'dstack: downloading data: 800.0 MB of 1000.0 MB (80%), 40.0 MB/s, 5 s left\n',
      'dstack: downloading data: 1000.0 MB in 25 s, 40.0 MB/s\n',
    ]);
    // Slow: 1% every 10 s, so a line every 10%.
    const slow = meter('log', 1000 * MB);
    for (let s = 10; s <= 250; s += 10) slow.at(s * 1000, (s / 10) * 10 * MB);
    expect(slow.out.map((l) => /\((\d+)%\)/.exec(l)?.[1])).to.deep.equal(['10', '20']);
  });

  it('in a log: a transfer over within 2 s says nothing; one within 10 s says only what it moved, how fast', () => {
    const quick = meter('log', 100 * MB);
    quick.at(1000, 50 * MB);
    quick.at(1900, 100 * MB);
    quick.p.end();
    expect(quick.out).to.deep.equal([]);
    const m = meter('log', 100 * MB);
    for (let s = 1; s <= 5; s++) m.at(s * 1000, s * 20 * MB);
    m.p.end();
    expect(m.out).to.deep.equal(['dstack: downloading data: 100.0 MB in 5 s, 20.0 MB/s\n']);
  });
});
