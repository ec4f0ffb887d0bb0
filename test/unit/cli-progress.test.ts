import { expect } from 'chai';
import { PassThrough } from 'node:stream';
import FakeTimers from '@sinonjs/fake-timers';
import { consoleOutput } from '../../coordinator/output.js';

/** A stream that says it is (or is not) a terminal, and keeps what was written to it. */
function stream(isTTY: boolean): NodeJS.WriteStream & { text: () => string } {
  const s = new PassThrough();
  let text = '';
  s.on('data', (d: Buffer) => (text += d.toString()));
  return Object.assign(s, { isTTY, text: () => text }) as unknown as NodeJS.WriteStream & { text: () => string };
}

describe('CLI transfer progress', () => {
  let clock: ReturnType<typeof FakeTimers.install>;
  beforeEach(() => (clock = FakeTimers.install({ toFake: ['Date'] })));
  afterEach(() => clock.uninstall());

  /** A 100 MB download reported every 250 ms over 5 s. */
  async function download(err: NodeJS.WriteStream & { text: () => string }): Promise<string> {
    const out = consoleOutput(stream(false), err);
    const bar = out.progress('downloading data', 100 * 1024 * 1024);
    for (let ms = 250; ms <= 5000; ms += 250) {
      clock.tick(250);
      bar.update((ms / 5000) * 100 * 1024 * 1024);
    }
    bar.done();
    await new Promise((r) => setImmediate(r));
    return err.text();
  }

  it('on a terminal: one line redrawn in place from 2 s on, with bytes, rate and time left, cleared at the end', async () => {
    const text = await download(stream(true));
    const draws = text.split('\r').filter((s) => s !== '');
    expect(text).to.not.include('\n');
    expect(draws[0]).to.equal('downloading data: 40.0 MB of 100.0 MB (40%), 20.0 MB/s, 3 s left\x1b[K');
    expect(draws.at(-2)).to.equal('downloading data: 100.0 MB of 100.0 MB (100%), 20.0 MB/s, 0 s left\x1b[K');
    expect(draws.at(-1)).to.equal('\x1b[K');
  });

  it('not on a terminal: nothing', async () => {
    expect(await download(stream(false))).to.equal('');
  });
});
